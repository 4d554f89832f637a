"""Generated raw requests against the receiver: every one is answered `success` (and on the
raw topic) or `error` (and on the dead-letter topic with what it sent), nothing else."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from connector.settings import Settings
from connector.topics import TopicNames
from tests.kafka_helpers import read_topic
from tests.receiver_helpers import DR, Reply, Server, edge_settings_of, read_reply, start
from tests.support import EXAMPLE_FIELDS

BATCHES = 10
BATCH = 210
CONCURRENCY = 32
DRAW = 1
IDENT = re.compile(rb"fz-[0-9]{5}x")
MUTABLE = sorted(set(EXAMPLE_FIELDS) - {"messageid"})

PIECES = st.sampled_from(
    [b" ", b"%", b"%FF", b"%B3%C9%B9%A6", b"+", b"%20", b"\xb3\xc9", b"\t", b"&", b"=", b"?",
     b"%E6%88%90", "成功接通".encode(), b"\x00", b"\r", b"\n", b"#", b"/", b"\xff\xfe", b"\x7f",
     "²".encode(), b"12", b"", b"0.5", b"-1", b"NaN"]
)  # fmt: skip
VALUES = st.lists(
    st.one_of(PIECES, st.binary(max_size=6), st.text(max_size=8).map(str.encode)), max_size=4
).map(b"".join)
NAMES = st.one_of(st.sampled_from([b"x", b"show_phone", b"token", b"", b"a b"]), VALUES)
METHODS = st.sampled_from(
    [b"GET"] * 6 + [b"POST"] * 6 + [b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"FOO", b"G\xc3\xa9T",
     b"GET\x00", b"", b"POST POST"]
)  # fmt: skip
CONTENT_TYPES = st.sampled_from(
    [None, b"application/x-www-form-urlencoded", b"application/x-www-form-urlencoded",
     b"application/x-www-form-urlencoded; charset=gbk", b"application/x-www-form-urlencoded;"
     b" charset=GB18030", b"application/x-www-form-urlencoded; charset=bogus", b"text/plain",
     b"multipart/form-data; boundary=zz", b"application/x-www-form-urlencoded; charset=\xff"]
)  # fmt: skip
HEADERS = st.lists(
    st.one_of(
        st.sampled_from([b"X-Forwarded-For: 203.0.113.9", b"User-Agent: NXCloud", b"Accept: */*",
                         b"X-Odd: a\xffb", b"Bad Header", b": empty", b"X-Ctl: \x01",
                         b"Connection: close", b"Expect: 100-continue", b" folded",
                         b"Connection: Upgrade\r\nUpgrade: websocket"]),
        st.tuples(st.just(b"X-F"), VALUES).map(b": ".join),
    ),
    max_size=3,
)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    method: bytes
    changes: tuple[tuple[str, bytes | None], ...]
    extra: tuple[tuple[bytes, bytes], ...]
    where: str
    pad: int
    version: bytes
    eol: bytes
    content_type: bytes | None
    headers: tuple[bytes, ...]
    many_headers: bool
    chunked: bool


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    changes = draw(
        st.lists(st.tuples(st.sampled_from(MUTABLE), st.one_of(st.none(), VALUES)), max_size=3)
    )
    return Spec(
        method=draw(METHODS),
        changes=tuple(changes),
        extra=tuple(draw(st.lists(st.tuples(NAMES, VALUES), max_size=2))),
        where=draw(st.sampled_from(["query", "query", "body", "both"])),
        pad=draw(st.sampled_from([0] * 30 + [20000, 70000])),
        version=draw(st.sampled_from([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2", b"http/1.1"])),
        eol=draw(st.sampled_from([b"\r\n"] * 6 + [b"\n"])),
        content_type=draw(CONTENT_TYPES),
        headers=tuple(draw(HEADERS)),
        many_headers=draw(st.sampled_from([False] * 40 + [True])),
        chunked=draw(st.sampled_from([False] * 5 + [True])),
    )


@dataclass(frozen=True)
class Sent:
    ident: bytes
    raw: bytes
    query: bytes
    body: bytes


def build(spec: Spec, ident: bytes) -> Sent:
    fields: dict[bytes, bytes] = {k.encode(): v.encode() for k, v in EXAMPLE_FIELDS.items()}
    fields[b"messageid"] = ident
    for name, value in spec.changes:
        if value is None:
            fields.pop(name.encode(), None)
        else:
            fields[name.encode()] = value
    pairs = [name + b"=" + value for name, value in fields.items()]
    pairs += [name + b"=" + value for name, value in spec.extra]
    if spec.pad:
        pairs.append(b"pad=" + b"p" * spec.pad)
    form = b"&".join(pairs)
    query = b"messageid=" + ident + (b"&" + form if spec.where != "body" else b"")
    body = form if spec.where != "query" else b""
    eol = spec.eol
    head = [b"%s %s?%s %s" % (spec.method, DR, query, spec.version), b"Host: fuzz"]
    if spec.content_type is not None:
        head.append(b"Content-Type: " + spec.content_type)
    head += spec.headers
    if spec.many_headers:
        head += [b"X-%d: 1" % i for i in range(70)]
    if spec.chunked and body:
        head.append(b"Transfer-Encoding: chunked")
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    return Sent(ident, eol.join(head) + eol + eol + payload, query, body)


async def exchange(server: Server, sent: Sent) -> Reply | str:
    try:
        reader, writer = await server.open()
    except OSError as exc:
        return f"connect failed: {exc!r}"
    try:
        writer.write(sent.raw)
        async with asyncio.timeout(20):
            await writer.drain()
            return await read_reply(reader)
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        return f"no answer: {exc!r}"
    finally:
        writer.close()


def kept(letter: dict[str, Any], name: str) -> bytes:
    if letter.get(f"{name}_base64"):
        return base64.b64decode(letter[f"{name}_base64"])
    text = letter.get(name)
    return b"" if text is None else str(text).encode()


def by_ident(letters: list[dict[str, Any]]) -> dict[bytes, list[dict[str, Any]]]:
    """The dead letters by the idents in what they kept (a request that a line break in a
    generated header value ends early leaves two)."""
    found: dict[bytes, list[dict[str, Any]]] = {}
    for letter in letters:
        blob = kept(letter, "request") + kept(letter, "query") + kept(letter, "body")
        for ident in set(IDENT.findall(blob)):
            found.setdefault(ident, []).append(letter)
    return found


def keeps(letter: dict[str, Any], request: Sent) -> bool:
    """True when `letter` holds what `request` sent, exactly (a body as far as it was read)."""
    if "request" in letter:
        return request.raw.startswith(kept(letter, "request"))
    return kept(letter, "query") == request.query and request.body.startswith(kept(letter, "body"))


@dataclass
class Tally:
    success: int = 0
    error: int = 0
    unreadable: int = 0
    sent: int = 0
    distinct: int = 0


def generated() -> list[Spec]:
    """BATCHES * BATCH requests, drawn by Hypothesis, DRAW at a time."""
    drawn: list[Spec] = []

    @hypothesis_settings(
        max_examples=BATCHES * BATCH // DRAW,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(specs(), min_size=DRAW, max_size=DRAW))
    def collect(specs: list[Spec]) -> None:
        drawn.extend(specs)

    collect()
    return drawn


async def test_generated_raw_requests_are_answered_and_stored(
    settings: Settings, tmp_path: Path, topic_names: TopicNames
) -> None:
    counter = itertools.count()
    tally = Tally()
    async for server in start(edge_settings_of(settings, tmp_path), topic_names):
        drawn = generated()
        tally.distinct = len({build(spec, b"fz-00000x").raw for spec in drawn})
        for at in range(0, len(drawn), BATCH):
            await check_batch(server, drawn[at : at + BATCH], counter, tally)
    print(
        f"fuzz: {tally.sent} requests ({tally.distinct} distinct), {tally.success} success,"
        f" {tally.error} error ({tally.unreadable} unreadable at the HTTP layer)"
    )
    assert tally.sent >= 2000
    assert tally.success > 0
    assert tally.error > 0
    assert tally.unreadable > 0


async def check_batch(
    server: Server, batch: list[Spec], counter: itertools.count[int], tally: Tally
) -> None:
    sent = [build(spec, b"fz-%05dx" % next(counter)) for spec in batch]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(request: Sent) -> Reply | str:
        async with gate:
            return await exchange(server, request)

    replies = await asyncio.gather(*(one(request) for request in sent))
    other = [(s.raw[:120], r) for s, r in zip(sent, replies, strict=True) if not ok(r)]
    assert not other, other[:5]
    successes = {s.ident for s, r in zip(sent, replies, strict=True) if r.body == b"success"}  # type: ignore[union-attr]
    errors = [s for s, r in zip(sent, replies, strict=True) if r.body == b"error"]  # type: ignore[union-attr]
    tally.sent += len(sent)
    tally.success += len(successes)
    tally.error += len(errors)
    bootstrap = server.settings.kafka_bootstrap_servers
    stored = await read_topic(
        bootstrap,
        server.names.dr_raw,
        lambda values: successes <= {v["fields"]["messageid"].encode() for v in values},
        deadline=60,
    )
    assert successes <= {v["fields"]["messageid"].encode() for v in stored}
    wanted = {s.ident for s in errors}
    letters = await read_topic(
        bootstrap,
        server.names.dead_letter,
        lambda values: wanted <= set(by_ident(values)),
        deadline=60,
    )
    found = by_ident(letters)
    for request in errors:
        matching = [letter for letter in found[request.ident] if keeps(letter, request)]
        assert matching, (request.raw[:300], found[request.ident])
        tally.unreadable += any("request" in letter for letter in matching)


def ok(reply: Reply | str) -> bool:
    if isinstance(reply, str):
        return False
    if reply.body == b"success":
        return reply.status == 200
    return reply.body == b"error" and reply.headers["content-type"].startswith("text/plain")
