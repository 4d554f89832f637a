from ipaddress import ip_address, ip_network

import pytest

from connector.errors import ConfigError
from connector.guard import (
    REDACTED,
    client_address,
    network_ok,
    scrub,
    scrub_text,
    target_token,
    token_ok,
)
from connector.settings import Settings

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


def test_every_spelling_of_the_token_is_scrubbed() -> None:
    token = "TOK+ORCHID/4f19=a2"
    spellings = [
        b"TOK+ORCHID/4f19=a2",
        b"TOK%2bORCHID%2f4f19%3da2",
        b"TOK%2BORCHID%2F4f19%3Da2",
        b"%54OK%2bORCHID/4f19%3Da2",
        b"%54%4f%4B%2B%4F%52%43%48%49%44%2F%34%66%31%39%3D%61%32",
    ]
    for spelling in spellings:
        assert scrub(b"a=1&token=" + spelling + b"&b=2", token) == b"a=1&token=[redacted]&b=2"
    assert scrub(b"x=TOK ORCHID", "TOK ORCHID") == b"x=[redacted]"
    assert scrub(b"x=TOK+ORCHID", "TOK ORCHID") == b"x=[redacted]"  # + is a space in a form
    assert scrub(b"x=TOK%2BORCHIDS", "TOK ORCHID") == b"x=TOK%2BORCHIDS"  # %2B is a plus


def test_the_token_is_scrubbed_however_deep_it_is_percent_encoded() -> None:
    token = "TOK+ORCHID/4f19=a2"
    deeper = [
        b"TOK%252BORCHID%252F4f19%253Da2",  # a value holding the token's query spelling
        b"TOK%25252bORCHID%25252f4f19%25253da2",
        b"%2554OK%25%32BORCHID/4f19=a2",  # the hex digits of an escape encoded too
        b"%252525252554OK+ORCHID/4f19=a2",
    ]
    for spelling in deeper:
        assert scrub(b"note=" + spelling + b"&b=2", token) == b"note=[redacted]&b=2"
    assert scrub(b"note=TOK%252BORCHIDS&x=%25", "TOK ORCHID") == b"note=TOK%252BORCHIDS&x=%25"
    assert scrub(b"%4TOK%2bORCHID/4f19=a2", token) == b"%4[redacted]"  # % before it, raw


def test_the_token_is_scrubbed_from_utf_16_and_utf_32_text() -> None:
    token = "TOK+ORCHID/4f19=a2"
    form = "voice_type=7&token=TOK%2BORCHID%2F4f19%3Da2&TOK%2BORCHID%2F4f19%3Da2=1&n=成功"
    for codec in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"):
        scrubbed = scrub(form.encode(codec), token).decode(codec)
        assert scrubbed == "voice_type=7&token=[redacted]&[redacted]=1&n=成功", codec
    odd = b"\x00" + "x=TOK+ORCHID/4f19=a2".encode("utf-16-le")  # at an odd offset
    assert scrub(odd, token) == b"\x00" + "x=[redacted]".encode("utf-16-le")


def test_a_field_is_scrubbed_as_text() -> None:
    token = "TOK+ORCHID/4f19=a2"
    assert scrub_text("TOK+ORCHID/4f19=a2", token) == "[redacted]"
    assert scrub_text("成功 TOK%2BORCHID%2F4f19%3Da2", token) == "成功 [redacted]"
    assert scrub_text("成功 100%", token) == "成功 100%"
    assert scrub_text("anything", None) == "anything"


def test_the_token_is_read_decoded_from_a_raw_target() -> None:
    base = b"/nxcloud/voice/dr"
    token = "TOK+ORCHID/4f19=a2"
    assert target_token(base + b"/TOK%2bORCHID/4f19%3Da2?a=1", base) == token
    assert target_token(base + b"?a=\x01&token=TOK%2BORCHID%2f4f19=a2", base) == token
    assert target_token(b"http://host" + base + b"/TOK+ORCHID/4f19=a2", base) == token
    assert target_token(base + b"?token=TOK+ORCHID", base) == "TOK ORCHID"
    assert target_token(base + b"?a=1", base) is None
    assert target_token(b"/anything?tok=1", base) is None
    assert target_token(base + b"/%FF", base) is None
    assert token_ok(token, token + "/")  # the path's trailing slash
    assert not token_ok(token, token + "//")
    assert not token_ok(token, token[:-1])


@pytest.mark.parametrize("value", ["with space", "tab\there", "é", "x" * 257, ""])
def test_a_token_outside_printable_ascii_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"NXCLOUD_RECEIVER_TOKEN": value or " "})
    assert "NXCLOUD_RECEIVER_TOKEN" in str(refused.value)
    assert value not in str(refused.value) or not value
