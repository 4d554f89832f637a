"""One request read into a push: its arrival, its exact query and body, and its DR fields
(the token scrubbed from them, validated), or the refusal that stopped the reading with what
had been read. The parsing is `connector.dr`'s; the app only wires this to storage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import datetime

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.types import Scope

from connector import dr
from connector.errors import Invalid, Refused
from connector.guard import scrub_text
from connector.receiver.protocol import BODY_ERROR, TARGET
from connector.settings import Settings


@dataclass
class Push:
    """What one request carried, as far as it was read."""

    arrival: dr.Arrival
    query: bytes
    body: bytes | None = None
    fields: dr.Fields | None = None


@dataclass(frozen=True)
class Reader:
    settings: Settings
    clock: Callable[[], datetime]

    def arrival(self, method: str, remote_addr: str, content_type: str) -> dr.Arrival:
        return dr.Arrival(
            receipt_id=uuid.uuid4().hex,
            received_at=self.clock(),
            remote_addr=remote_addr,
            receiver=self.settings.receiver_id,
            method=method,
            content_type=content_type,
        )

    async def read(self, request: Request, remote_addr: str) -> tuple[Push, Refused | None]:
        """The push, and the refusal that stopped its reading (None when its fields are a
        valid DR)."""
        settings = self.settings
        content_type = request.headers.get("content-type", "")
        push = Push(
            self.arrival(request.method, remote_addr, content_type), raw_query(request.scope)
        )
        try:
            push.body = await read_body(
                request, settings.receiver_max_body_bytes, settings.receiver_read_timeout_seconds
            )
            if request.method not in ("GET", "POST"):
                raise Refused(405, f"method {request.method} is not GET or POST", push.body)
            push.fields = self.scrub(await self.fields(request.headers, push.query, push.body))
            dr.validate(push.fields)
        except Invalid as exc:
            return push, Refused(400, str(exc), push.body)
        except Refused as refused:
            return push, refused
        return push, None

    async def fields(self, headers: Headers, query: bytes, body: bytes) -> dr.Fields:
        limit = self.settings.receiver_max_fields
        charset = dr.charset_of(headers.get("content-type", ""))
        query_pairs = dr.split_form(query, limit)
        from_body, count = await body_fields(headers, body, limit, charset)
        if len(query_pairs) + count > limit:
            total = len(query_pairs) + count
            raise Invalid(f"too many fields ({total}, at most {limit}) in query and body")
        return dr.merge(dr.decode_form(query_pairs, charset), from_body)

    def scrub(self, fields: dr.Fields) -> dr.Fields:
        """The fields with every spelling of the token replaced, in names and values."""
        token = self.settings.receiver_token
        if token is None:
            return fields
        secret = token.reveal()
        return {
            scrub_text(name, secret): scrub_text(value, secret) for name, value in fields.items()
        }


async def read_body(request: Request, limit: int, patience: float) -> bytes:
    """The body, refusing it as soon as it exceeds `limit`, arrives too slowly or is cut off;
    the refusal keeps what arrived."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and declared.isascii() and int(declared) > limit:
        raise Refused(413, f"body of {declared} bytes exceeds the {limit}-byte limit", b"")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(patience):
            async for chunk in request.stream():
                size += len(chunk)
                chunks.append(chunk)
                if size > limit:
                    body = b"".join(chunks)[:limit]
                    raise Refused(413, f"body exceeds the {limit}-byte limit", body)
    except TimeoutError:
        body = b"".join(chunks)
        raise Refused(408, f"body not received within {patience:g} s", body) from None
    except ClientDisconnect:
        body = b"".join(chunks)
        raise Refused(400, f"body cut off after {size} bytes: client gone", body) from None
    body = b"".join(chunks)
    cut = request.scope.get("extensions", {}).get(BODY_ERROR)
    if cut is not None:
        raise Refused(400, f"body cut off after {size} bytes: {cut['reason']}", body)
    return body


async def body_fields(
    headers: Headers, body: bytes, max_fields: int, charset: str
) -> tuple[dr.Fields, int]:
    """The body's fields and how many there were."""
    if not body:
        return {}, 0
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        fields = await _multipart(headers, body, max_fields)
        return fields, len(fields)
    pairs = dr.split_form(body, max_fields)
    return dr.decode_form(pairs, charset), len(pairs)


class StrictMultiPartParser(MultiPartParser):
    """Starlette's parser, refusing a value its charset cannot decode (instead of Latin-1)."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            charset = self._charset or "utf-8"
            try:
                bytes(part.data).decode(charset)
            except (UnicodeDecodeError, LookupError):
                raise Invalid(f"field {part.field_name[:40]!r} is not valid {charset}") from None
        super().on_part_end()


async def _multipart(headers: Headers, body: bytes, max_fields: int) -> dr.Fields:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = StrictMultiPartParser(headers, stream(), max_files=0, max_fields=max_fields)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise Invalid(f"unreadable multipart body: {exc.message}") from None
    fields: dr.Fields = {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise Invalid(f"unexpected file in field {name!r}")
        fields[name] = value
    return fields


def raw_query(scope: Scope) -> bytes:
    """The query string exactly as sent (the edge has %-encoded raw spaces for the parser)."""
    sent = scope.get("extensions", {}).get(TARGET)
    if sent is None:
        query: bytes = scope["query_string"]
        return query
    return bytes(sent["target"]).partition(b"?")[2]
