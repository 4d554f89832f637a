"""The schema registry, through its Confluent-compatible REST API (`NXCLOUD_REGISTRY_URL`,
e.g. Apicurio Registry's `/apis/ccompat/v7`).

`nxcloud-connector registry` registers the value schema of every public topic under the
topic-name subject `<topic>-value` and sets the subject's compatibility level; the writers
(the worker, `replay --into`) look the ids up when the wire format is on (`connector.wire`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import orjson

from connector import schema, wire
from connector.errors import RegistryUnreachable, SchemaRefused
from connector.settings import Secret, Settings
from connector.topics import TopicNames

log = logging.getLogger(__name__)
# A new revision must validate every record written under every earlier one: the
# promise of connector/compat.py (within a major version a schema only grows), which is
# what lets a reader validate any record with the newest schema.
COMPATIBILITY: Final = "BACKWARD_TRANSITIVE"
CONTENT_TYPE: Final = "application/vnd.schemaregistry.v1+json"
TIMEOUT_SECONDS: Final = 10.0


def subject(topic: str) -> str:
    """The topic-name strategy: the subject of a topic's values."""
    return f"{topic}-value"


def contracts(names: TopicNames) -> dict[str, str]:
    """Each public topic's value subject, and the shipped schema its records follow."""
    return {
        subject(names.dr_raw): "dr-raw",
        subject(names.cdr_raw): "cdr-raw",
        subject(names.call_events): "call-event",
        subject(names.dead_letter): "dead-letter",
        subject(names.reconciliation): "reconciliation",
    }


def registered_form(shipped: str) -> str:
    """The text a shipped schema is registered as: without `$schema` and `$id` (its id
    goes to `$comment`). Apicurio's compatibility checker knows no draft after 07 and does
    not resolve local `$ref`s under a `urn:` id; a validator given no `$schema` uses the
    newest draft (2020-12, the shipped one), so every record validates as before."""
    document = schema.load(shipped)
    identifier = document.pop("$id", None)
    document.pop("$schema", None)
    if identifier is not None:
        document = {"$comment": f"registered form of {identifier}", **document}
    return orjson.dumps(document).decode()


@dataclass(frozen=True)
class Registered:
    subject: str
    id: int
    version: int


def _reason(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or response.text.strip() or response.reason_phrase)[:500]


class Basic(httpx.Auth):
    """HTTP Basic with the password as its file holds it at each request (a rotated
    NXCLOUD_REGISTRY_PASSWORD_FILE is in the next one)."""

    def __init__(self, username: str, password: Secret) -> None:
        self._username, self._password = username, password

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield from httpx.BasicAuth(self._username, self._password.reveal()).auth_flow(request)


class Registry:
    """A client of one registry; an async context manager."""

    def __init__(self, settings: Settings) -> None:
        if settings.registry_url is None:
            raise RegistryUnreachable("no schema registry: set NXCLOUD_REGISTRY_URL")
        self._base = settings.registry_url.rstrip("/")
        parts = urlsplit(self._base)  # what errors show: never a password in the URL
        self.url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        password = settings.registry_password
        self._auth = (
            Basic(settings.registry_username, password)
            if settings.registry_username is not None and password is not None
            else None
        )
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(settings.registry_ca_file))
            if settings.registry_ca_file is not None
            else True
        )
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(
            base_url=self._base + "/", auth=self._auth, verify=self._verify,
            timeout=TIMEOUT_SECONDS, headers={"Content-Type": CONTENT_TYPE},
        )  # fmt: skip
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        assert self._client is not None, "use the registry as an async context manager"
        try:
            return await self._client.request(
                method, path, content=None if body is None else orjson.dumps(body)
            )
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise RegistryUnreachable(
                f"schema registry {self.url}: {detail} (see NXCLOUD_REGISTRY_URL)"
            ) from None

    def _failed(self, response: httpx.Response, what: str) -> RegistryUnreachable:
        return RegistryUnreachable(
            f"schema registry {self.url}: {what}: HTTP {response.status_code}: {_reason(response)}"
        )

    async def register(self, name: str, text: str) -> Registered:
        """Register `text` under the subject `name` (idempotent: the same schema keeps its
        id and version); SchemaRefused names the subject and the registry's reason."""
        path = f"subjects/{quote(name, safe='')}/versions"
        response = await self._call("POST", path, {"schemaType": "JSON", "schema": text})
        if response.status_code in (409, 422):
            raise SchemaRefused(f"the schema registry refuses {name}: {_reason(response)}")
        if response.status_code != 200:
            raise self._failed(response, f"registering {name}")
        return await self.lookup(name, text)

    async def lookup(self, name: str, text: str) -> Registered:
        """The id and version of `text` under the subject `name`."""
        path = f"subjects/{quote(name, safe='')}"
        response = await self._call("POST", path, {"schemaType": "JSON", "schema": text})
        if response.status_code == 404:
            raise RegistryUnreachable(
                f"schema registry {self.url}: {name} has not this schema: "
                "run `nxcloud-connector registry`"
            )
        if response.status_code != 200:
            raise self._failed(response, f"looking up {name}")
        found = orjson.loads(response.content)
        return Registered(name, int(found["id"]), int(found["version"]))

    async def set_compatibility(self, name: str, level: str = COMPATIBILITY) -> None:
        path = f"config/{quote(name, safe='')}"
        response = await self._call("PUT", path, {"compatibility": level})
        if response.status_code != 200:
            raise self._failed(response, f"setting the compatibility of {name}")


async def register_all(settings: Settings, names: TopicNames) -> list[Registered]:
    """Every public topic's value schema under its subject, at COMPATIBILITY."""
    done = []
    async with Registry(settings) as registry:
        for name, shipped in contracts(names).items():
            done.append(await registry.register(name, registered_form(shipped)))
            await registry.set_compatibility(name)
    return done


class Ids:
    """The registry ids of the shipped schemas a writer frames its values with, looked up
    once each and kept (an id never changes, so a registry down later costs nothing)."""

    def __init__(self, settings: Settings, names: TopicNames) -> None:
        self._settings, self._names = settings, names
        self._known: dict[str, int] = {}

    def known(self, topic: str) -> int | None:
        return self._known.get(topic)

    async def of(self, topic: str) -> int:
        """The id of `topic`'s value schema; RegistryUnreachable while it cannot be had."""
        found = self._known.get(topic)
        if found is None:
            name = subject(topic)
            async with Registry(self._settings) as registry:
                text = registered_form(contracts(self._names)[name])
                registered = await registry.lookup(name, text)
            found = self._known[topic] = registered.id
        return found

    async def frame(self, topic: str, value: bytes) -> bytes:
        """`value` framed with the id of `topic`'s schema (a one-shot command's writer)."""
        return wire.frame(await self.of(topic), value)


def ids(settings: Settings, names: TopicNames) -> Ids | None:
    """The ids to frame with when the wire format is on; None writes plain JSON."""
    return Ids(settings, names) if settings.registry_wire_format else None


async def patiently(
    attempt: Callable[[], Awaitable[int]],
    sleep: Callable[[float], Awaitable[None]],
    marker: Path | None = None,
    *,
    every: float = 5.0,
) -> int:
    """`attempt` until it succeeds: the worker writes no event without its schema id and
    waits for the registry as it waits for Kafka. It logs the outage at its start, every
    minute and at its end, and while it lasts `marker` holds the reason (the worker's
    readiness probe reads it)."""
    failures = 0
    while True:
        try:
            found = await attempt()
        except RegistryUnreachable as exc:
            if failures % max(1, int(60 / every)) == 0:
                log.warning("no event is written until the schema registry answers: %s", exc)
            _mark(marker, str(exc))
            failures += 1
            await sleep(every)
            continue
        if failures:
            log.warning("the schema registry answers again after %d failed attempts", failures)
        _mark(marker, None)
        return found


def _mark(marker: Path | None, reason: str | None) -> None:
    if marker is None:
        return
    if reason is None:
        marker.unlink(missing_ok=True)
    else:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(reason + "\n")
