from ipaddress import ip_address, ip_network

from connector.guard import REDACTED, client_address, network_ok, scrub, token_ok

PROXIES = (ip_network("10.0.0.0/8"), ip_network("::1/128"))


def test_no_configured_token_lets_everyone_in() -> None:
    assert token_ok(None, None)
    assert token_ok(None, "anything")


def test_a_configured_token_must_match() -> None:
    assert token_ok("s3cret", "s3cret")
    assert not token_ok("s3cret", "s3cre")
    assert not token_ok("s3cret", None)
    assert not token_ok("s3cret", "")


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    assert client_address("198.51.100.7", ["203.0.113.9"], PROXIES) == ip_address("198.51.100.7")


def test_forwarded_for_is_read_from_the_right_past_trusted_proxies() -> None:
    header = "192.0.2.1, 203.0.113.9, 10.1.2.3"
    assert client_address("10.0.0.5", [header], PROXIES) == ip_address("203.0.113.9")


def test_a_garbled_forwarded_hop_yields_no_address() -> None:
    assert client_address("10.0.0.5", ["not-an-ip"], PROXIES) is None


def test_the_allow_list() -> None:
    allowed = (ip_network("203.0.113.0/24"),)
    assert network_ok(None, ())
    assert network_ok(ip_address("203.0.113.9"), allowed)
    assert not network_ok(ip_address("198.51.100.7"), allowed)
    assert not network_ok(ip_address("::1"), allowed)
    assert not network_ok(None, allowed)


def test_every_forwarded_for_line_is_read() -> None:
    lines = ["203.0.113.9", "198.51.100.1, 10.1.2.3"]
    assert client_address("10.0.0.5", lines, PROXIES) == ip_address("198.51.100.1")
    forged_then_real = ["203.0.113.9", "198.51.100.1"]
    assert client_address("10.0.0.5", forged_then_real, PROXIES) == ip_address("198.51.100.1")


def test_the_token_is_scrubbed_raw_and_percent_encoded() -> None:
    data = b"GET /dr/s3 cret?token=s3%20cret&t=s3+cret HTTP/1.1"
    assert scrub(data, "s3 cret") == (
        b"GET /dr/" + REDACTED + b"?token=" + REDACTED + b"&t=" + REDACTED + b" HTTP/1.1"
    )
    assert scrub(data, None) == data
