"""Every shipped schema is a compatible revision of its last released version, and the
checker catches each kind of break on a deliberately broken copy."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from connector import schema
from connector.compat import breaking_changes
from connector.schema import SchemaId

RELEASED = Path(__file__).parent.parent / "schemas" / "released"


def released() -> dict[SchemaId, dict[str, Any]]:
    found = {}
    for path in sorted(RELEASED.glob("*.json")):
        document = orjson.loads(path.read_bytes())
        found[SchemaId.parse(document["$id"])] = document
    return found


def last_released(name: str) -> tuple[SchemaId, dict[str, Any]]:
    shipped = schema.schema_id(name)
    candidates = [(i, d) for i, d in released().items()
                  if (i.name, i.major) == (shipped.name, shipped.major)]  # fmt: skip
    assert candidates, f"{name}: no released copy under {RELEASED}"
    return max(candidates, key=lambda item: item[0])


def test_every_released_copy_is_named_after_its_id() -> None:
    for path in RELEASED.glob("*.json"):
        found = SchemaId.parse(orjson.loads(path.read_bytes())["$id"])
        assert path.name == f"{found.name}.v{found.major}.{found.minor}.json"


@pytest.mark.parametrize("name", schema.names())
def test_each_shipped_schema_keeps_the_promise_of_its_last_release(name: str) -> None:
    released_id, document = last_released(name)
    shipped = schema.load(name)
    assert breaking_changes(document, shipped) == []
    shipped_id = SchemaId.parse(shipped["$id"])
    assert shipped_id >= released_id
    if shipped_id == released_id:
        assert shipped == document, f"{name} changed without a new minor version in its $id"


def call_event() -> dict[str, Any]:
    return copy.deepcopy(last_released(schema.CALL_EVENT)[1])


def remove_field(s: dict[str, Any]) -> None:
    del s["properties"]["hangup_cause"]
    s["required"].remove("hangup_cause")


def remove_nested_field(s: dict[str, Any]) -> None:
    del s["properties"]["billing"]["properties"]["cost"]


def retype_field(s: dict[str, Any]) -> None:
    s["properties"]["duration_seconds"]["type"] = ["number", "null"]


def retype_through_a_ref(s: dict[str, Any]) -> None:
    s["$defs"]["money"]["type"] = ["number", "null"]


def new_required_field(s: dict[str, Any]) -> None:
    s["properties"]["tenant"] = {"type": "string"}
    s["required"].append("tenant")


def field_no_longer_required(s: dict[str, Any]) -> None:
    s["required"].remove("cdr_id")


def narrow_enum(s: dict[str, Any]) -> None:
    s["properties"]["service"]["enum"].remove("group_call")


def change_const(s: dict[str, Any]) -> None:
    s["properties"]["schema_version"]["const"] = 2


def tighten_pattern(s: dict[str, Any]) -> None:
    s["properties"]["phone"]["pattern"] = "^\\+86[0-9]{4,16}$"


def raise_minimum(s: dict[str, Any]) -> None:
    s["properties"]["revision"]["minimum"] = 2


def close_an_open_object() -> dict[str, Any]:
    document = copy.deepcopy(schema.load("dead-letter.v1"))
    document["additionalProperties"] = False
    return document


@pytest.mark.parametrize(
    "break_it",
    [remove_field, remove_nested_field, retype_field, retype_through_a_ref, new_required_field,
     field_no_longer_required, narrow_enum, change_const, tighten_pattern, raise_minimum],
)  # fmt: skip
def test_a_broken_copy_of_the_call_event_schema_fails(
    break_it: Callable[[dict[str, Any]], None],
) -> None:
    broken = call_event()
    break_it(broken)
    assert breaking_changes(call_event(), broken)


def test_closing_an_open_object_fails() -> None:
    changes = breaking_changes(schema.load("dead-letter.v1"), close_an_open_object())
    assert changes == ["/: additional properties no longer allowed"]


def test_a_narrowed_schema_for_additional_properties_fails() -> None:
    old = {"type": "object", "additionalProperties": {"type": ["string", "null"]}}
    new = {"type": "object", "additionalProperties": {"type": "string"}}
    assert breaking_changes(old, new) == [
        "/additionalProperties: retyped from ['null', 'string'] to ['string']"
    ]
    assert breaking_changes(old, {"type": "object"}) == []


def test_the_checker_names_what_broke_and_where() -> None:
    broken = call_event()
    remove_nested_field(broken)
    narrow_enum(broken)
    assert sorted(breaking_changes(call_event(), broken)) == [
        "/properties/billing: property 'cost' removed",
        "/properties/service: enum narrowed, ['group_call'] no longer allowed",
    ]


def test_growth_is_compatible() -> None:
    grown = call_event()
    grown["properties"]["tenant"] = {"type": ["string", "null"]}
    grown["properties"]["service"]["enum"].append("marketing")
    grown["properties"]["billing"]["properties"]["currency"] = {"type": ["string", "null"]}
    del grown["properties"]["revision"]["minimum"]
    grown["properties"]["call_id"]["description"] = "reworded"
    assert breaking_changes(call_event(), grown) == []
