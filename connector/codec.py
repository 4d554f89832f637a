"""Observations and call states as JSON, for the worker's topics and table. Pure."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import orjson

from connector.merge import BILLING, DR_FINAL, REPORTED, CallState
from connector.normalize import Observation

IDENTITY: Final = ("service", "message_id", "phone", "phone_raw", "country_code")
MONEY: Final = frozenset({"unit_price", "basic_price"})
TIMES: Final = frozenset({"started_at", "ended_at", "connected_at"})


def _facts_out(facts: Any) -> dict[str, Any]:
    return {
        name: (str(value) if isinstance(value, Decimal) else
               value.isoformat() if isinstance(value, datetime) else value)
        for name, value in facts.items()
    }  # fmt: skip


def _facts_in(facts: dict[str, Any]) -> dict[str, Any]:
    return {
        name: (
            None if value is None
            else Decimal(value) if name in MONEY
            else datetime.fromisoformat(value) if name in TIMES
            else value
        )
        for name, value in facts.items()
    }  # fmt: skip


def encode_observation(observation: Observation, observed_at: datetime) -> bytes:
    return orjson.dumps(
        {
            "source": observation.source,
            **{name: getattr(observation, name) for name in IDENTITY},
            "facts": _facts_out(observation.facts),
            "observed_at": observed_at.isoformat(),
        }
    )


def decode_observation(data: bytes) -> tuple[Observation, datetime]:
    raw = orjson.loads(data)
    observation = Observation(
        source=raw["source"],
        **{name: raw[name] for name in IDENTITY},
        facts=_facts_in(raw["facts"]),
    )
    return observation, datetime.fromisoformat(raw["observed_at"])


def encode_state(state: CallState) -> bytes:
    return orjson.dumps(
        {
            "call_id": state.call_id,
            **{name: getattr(state, name) for name in IDENTITY},
            "facts": _facts_out(state.facts),
            "sources": sorted(state.sources),
            "revision": state.revision,
            "first_seen_at": state.first_seen_at.isoformat() if state.first_seen_at else None,
            "updated_at": state.updated_at.isoformat() if state.updated_at else None,
            "cdr_seen_at": state.cdr_seen_at.isoformat() if state.cdr_seen_at else None,
            "given_by_dr": sorted(state.given_by_dr),
            "reported": {source: _facts_out(own) for source, own in state.reported.items()},
        }
    )


def decode_state(data: bytes) -> CallState:
    raw = orjson.loads(data)
    facts = _facts_in(raw["facts"])
    sources = frozenset(raw["sources"])
    given = frozenset(raw["given_by_dr"] if "given_by_dr" in raw else _given_before(raw))
    reported = raw.get("reported")
    return CallState(
        call_id=raw["call_id"],
        **{name: raw[name] for name in IDENTITY},
        facts=facts,
        sources=sources,
        revision=raw["revision"],
        first_seen_at=datetime.fromisoformat(raw["first_seen_at"])
        if raw["first_seen_at"]
        else None,
        updated_at=datetime.fromisoformat(raw["updated_at"]) if raw["updated_at"] else None,
        cdr_seen_at=_moment(raw.get("cdr_seen_at")),
        given_by_dr=given,
        reported=_reported_before(facts, sources, given)
        if reported is None
        else {source: _facts_in(own) for source, own in reported.items()},
    )


def _reported_before(
    facts: dict[str, Any], sources: frozenset[str], given: frozenset[str]
) -> dict[str, dict[str, Any]]:
    """A state written before `reported`: the DR's own figures are the facts it gave;
    the CDR row's are not told apart from the DR's until the call's next row."""
    if "dr" not in sources:
        return {}
    return {"dr": {name: facts.get(name) if name in given else None for name in REPORTED}}


def _given_before(raw: dict[str, Any]) -> set[str]:
    """A state written before `given_by_dr`, when a seen DR made final the billing it gave
    (`billed_by_dr`; before that, all the billing there was) and every other fact there
    was: the merge then kept the first value it had."""
    if "dr" not in raw["sources"]:
        return set()
    billed = raw.get("billed_by_dr")
    present = {name for name in DR_FINAL if raw["facts"].get(name) is not None}
    return present if billed is None else (present - set(BILLING)) | set(billed)


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
