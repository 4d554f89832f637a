"""The JSON Schemas the connector ships, by name and by id.

Each topic's records follow one schema, `schemas/NAME.vMAJOR.json` (top level of the
repository; the package ships it as `connector/schemas`, a link to it), whose `$id` is
`urn:nxcloud-connector:schema:NAME:vMAJOR.MINOR`: the major version is the topic's contract,
the minor version counts the compatible revisions within it (connector.compat).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final

import orjson

from connector.errors import SchemaError

URN_PREFIX: Final = "urn:nxcloud-connector:schema:"
_ID: Final = re.compile(r"^urn:nxcloud-connector:schema:([a-z][a-z0-9-]*):v([0-9]+)\.([0-9]+)$")
_FILE: Final = re.compile(r"^([a-z][a-z0-9-]*)\.v([0-9]+)\.json$")


@dataclass(frozen=True, order=True)
class SchemaId:
    name: str
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> SchemaId:
        found = _ID.match(text)
        if not found:
            raise SchemaError(f"{text!r} is not a schema id ({URN_PREFIX}NAME:vMAJOR.MINOR)")
        return cls(found[1], int(found[2]), int(found[3]))

    def __str__(self) -> str:
        return f"{URN_PREFIX}{self.name}:v{self.major}.{self.minor}"


def _directory() -> Traversable:
    return resources.files("connector") / "schemas"


def names() -> list[str]:
    """The shipped schemas' names, `NAME.vMAJOR` (as `schema NAME` takes them), sorted."""
    found = (_FILE.match(entry.name) for entry in _directory().iterdir())
    return sorted(f"{match[1]}.v{match[2]}" for match in found if match)


def text(name: str) -> str:
    """One shipped schema as its file holds it; `name` is `NAME.vMAJOR` or `NAME` (the
    highest major version shipped)."""
    wanted = name.removesuffix(".json")
    if "." not in wanted:
        majors = [each for each in names() if each.split(".v")[0] == wanted]
        wanted = max(majors, key=lambda each: int(each.split(".v")[1]), default=wanted)
    if wanted not in names():
        raise SchemaError(f"no schema {name!r}; shipped: {', '.join(names())}")
    result: str = (_directory() / f"{wanted}.json").read_text(encoding="utf-8")
    return result


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = orjson.loads(text(name))
    return schema


def schema_id(name: str) -> SchemaId:
    return SchemaId.parse(load(name)["$id"])


def resolve(identifier: str) -> dict[str, Any]:
    """The shipped schema that validates every record of `identifier` (a `ce_dataschema`):
    the same name and major version, at the same or a later minor version."""
    wanted = SchemaId.parse(identifier)
    shipped = f"{wanted.name}.v{wanted.major}"
    if shipped not in names():
        raise SchemaError(f"no shipped schema for {identifier}")
    schema = load(shipped)
    if SchemaId.parse(schema["$id"]).minor < wanted.minor:
        raise SchemaError(f"{identifier} is newer than the shipped {schema['$id']}")
    return schema


CALL_EVENT: Final = "call-event.v1"
