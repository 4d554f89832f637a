"""Whether a new revision of a JSON Schema keeps its promise to readers of the old one. Pure.

Within a major version a schema only grows: a new revision may add optional properties
and enum values, and drop constraints. Everything else breaks a reader, of old records
or of new ones: a removed, retyped or no longer required property, a new required one, a
narrowed enum, a changed const, a tighter bound or pattern, a closed object that was open.
A keyword this checker does not know counts as a break when it changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

ANNOTATIONS: Final = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default",
     "deprecated", "readOnly", "writeOnly", "$defs", "format"}
)  # fmt: skip
CHECKED: Final = frozenset(
    {"type", "enum", "const", "properties", "required", "additionalProperties", "items",
     "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
     "maxLength", "minItems", "maxItems", "$ref"}
)  # fmt: skip
LOWER_BOUNDS: Final = ("minimum", "exclusiveMinimum", "minLength", "minItems")
UPPER_BOUNDS: Final = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")


def breaking_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Every change from `old` to `new` that breaks a reader, as `path: what`; none when
    `new` is a compatible revision of `old`."""
    found: list[str] = []
    _compare((_Doc(old), _Doc(new)), old, new, "", found)
    return found


class _Doc:
    """A schema document, to follow its local `$ref`s."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def deref(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        seen: set[str] = set()
        while "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
                return node
            seen.add(ref)
            target: Any = self.root
            for part in ref[2:].split("/"):
                if not isinstance(target, Mapping) or part not in target:
                    return node
                target = target[part]
            if not isinstance(target, Mapping):
                return node
            node = {**{k: v for k, v in node.items() if k != "$ref"}, **target}
        return node


def _types(node: Mapping[str, Any]) -> frozenset[str] | None:
    declared = node.get("type")
    if declared is None:
        return None
    return frozenset([declared] if isinstance(declared, str) else declared)


def _key(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _compare(
    docs: tuple[_Doc, _Doc], old_node: Any, new_node: Any, path: str, found: list[str]
) -> None:
    here = path or "/"
    if isinstance(old_node, bool) or isinstance(new_node, bool):
        if old_node is not new_node and new_node is not True:
            found.append(f"{here}: schema {old_node!r} became {new_node!r}")
        return
    old, new = docs[0].deref(old_node), docs[1].deref(new_node)
    if "$ref" in old or "$ref" in new:
        if old.get("$ref") != new.get("$ref"):
            found.append(f"{here}: a reference that cannot be followed changed")
        return
    _compare_types(old, new, here, found)
    _compare_values(old, new, here, found)
    _compare_bounds(old, new, here, found)
    _compare_objects(docs, old, new, path, found)
    if "items" in old or "items" in new:
        _compare(docs, old.get("items", True), new.get("items", True), f"{path}/items", found)
    for keyword in sorted((set(old) | set(new)) - ANNOTATIONS - CHECKED):
        if _key(old.get(keyword)) != _key(new.get(keyword)):
            found.append(f"{here}: unchecked keyword {keyword} changed")


def _compare_types(
    old: Mapping[str, Any], new: Mapping[str, Any], here: str, found: list[str]
) -> None:
    old_types, new_types = _types(old), _types(new)
    if old_types != new_types:
        show = sorted(old_types or ["any"]), sorted(new_types or ["any"])
        found.append(f"{here}: retyped from {show[0]} to {show[1]}")


def _compare_values(
    old: Mapping[str, Any], new: Mapping[str, Any], here: str, found: list[str]
) -> None:
    if _key(old.get("const")) != _key(new.get("const")):
        found.append(f"{here}: const {old.get('const')!r} became {new.get('const')!r}")
    if "enum" in new:
        allowed = {_key(value) for value in new["enum"]}
        if "enum" not in old:
            found.append(f"{here}: an enum now limits the values")
        else:
            lost = [value for value in old["enum"] if _key(value) not in allowed]
            if lost:
                found.append(f"{here}: enum narrowed, {lost!r} no longer allowed")


def _compare_bounds(
    old: Mapping[str, Any], new: Mapping[str, Any], here: str, found: list[str]
) -> None:
    for keyword in LOWER_BOUNDS:
        if keyword in new and (keyword not in old or new[keyword] > old[keyword]):
            found.append(f"{here}: {keyword} raised to {new[keyword]!r}")
    for keyword in UPPER_BOUNDS:
        if keyword in new and (keyword not in old or new[keyword] < old[keyword]):
            found.append(f"{here}: {keyword} lowered to {new[keyword]!r}")
    if "pattern" in new and old.get("pattern") != new["pattern"]:
        found.append(f"{here}: pattern became {new['pattern']!r}")


def _compare_objects(
    docs: tuple[_Doc, _Doc],
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    path: str,
    found: list[str],
) -> None:
    here = path or "/"
    old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
    found.extend(f"{here}: new required property {name!r}"
                 for name in sorted(new_required - old_required))  # fmt: skip
    found.extend(f"{here}: property {name!r} no longer required"
                 for name in sorted(old_required - new_required))  # fmt: skip
    if (
        old.get("additionalProperties", True) is not False
        and new.get("additionalProperties") is False
    ):
        found.append(f"{here}: additional properties no longer allowed")
    elif isinstance(old.get("additionalProperties"), Mapping):
        _compare(docs, old["additionalProperties"], new.get("additionalProperties", True),
                 f"{path}/additionalProperties", found)  # fmt: skip
    old_properties: Mapping[str, Any] = old.get("properties", {})
    new_properties: Mapping[str, Any] = new.get("properties", {})
    for name, old_property in old_properties.items():
        if name not in new_properties:
            found.append(f"{here}: property {name!r} removed")
            continue
        _compare(docs, old_property, new_properties[name], f"{path}/properties/{name}", found)
