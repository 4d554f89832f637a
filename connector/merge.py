"""One truth per call: merge observations, decide revisions, shape the event. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Generic, Literal, TypeVar

import orjson

from connector.clock import rfc3339
from connector.normalize import EITHER, Observation

SCHEMA_VERSION: Final = 1
# A DR with no CDR row after this long: the poller missed the row.
CDR_GRACE: Final = timedelta(hours=24)
BILLING: Final = ("cycle_seconds", "cycles", "unit_price", "basic_price")
FACTS: Final = (
    "display_number", "connected", "result_raw", "hangup_cause", "hangup_disposition",
    "ivr_result", "record_url", "started_at", "ended_at", "connected_at", "duration_seconds",
    *BILLING, "cdr_id",
)  # fmt: skip
# Only CDR rows carry these: the newest row's value.
CDR_ONLY: Final = ("connected_at", "cdr_id")
# A value the DR gives is final; until the DR gives one, the newest CDR row's counts.
DR_FINAL: Final = tuple(name for name in FACTS if name not in CDR_ONLY)
# What each source reported on its own, for reconciliation: the DR's, the newest CDR row's.
REPORTED: Final = ("duration_seconds", "cycle_seconds", "cycles", "connected", *BILLING[2:])


@dataclass(frozen=True)
class CallState:
    call_id: str
    service: str
    message_id: str
    phone: str
    phone_raw: str
    country_code: str
    facts: Mapping[str, Any] = field(default_factory=dict)
    sources: frozenset[str] = frozenset()
    revision: int = 0
    first_seen_at: datetime | None = None
    updated_at: datetime | None = None
    cdr_seen_at: datetime | None = None
    given_by_dr: frozenset[str] = frozenset()
    reported: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _merged_facts(state: CallState, observation: Observation) -> dict[str, Any]:
    """The DR's value wins; a field the DR left blank (or the DR not yet seen) follows the
    newest CDR row.

    The rule depends on which source gave a value, never on the order they came in (an
    older CDR row after a newer one is stale and dropped before this), so the other source
    arriving can change a field once but never flip it back."""
    facts = {name: state.facts.get(name) for name in FACTS}
    for name in FACTS:
        value = observation.facts.get(name)
        if value is None:
            continue
        if observation.source == "dr" or name not in state.given_by_dr:
            facts[name] = value
    return facts


def _given_by_dr(state: CallState, observation: Observation) -> frozenset[str]:
    if observation.source != "dr":
        return state.given_by_dr
    given = {name for name in DR_FINAL if observation.facts.get(name) is not None}
    return state.given_by_dr | given


def _reported(state: CallState, observation: Observation) -> Mapping[str, Mapping[str, Any]]:
    own = {name: observation.facts.get(name) for name in REPORTED}
    return {**state.reported, observation.source: own}


def _service(current: str, observed: str) -> str:
    return observed if current == EITHER else current


def merge(
    state: CallState | None, observation: Observation, now: datetime
) -> tuple[CallState, dict[str, Any] | None]:
    """The call after `observation` (observed at `now`), and the event to emit, if any.

    A CDR row older than one already applied is stale (a replay, a slow re-poll) and
    changes nothing, so a provisional cost can never replace a settled one.
    """
    if (
        state is not None
        and observation.source == "cdr"
        and state.cdr_seen_at is not None
        and now < state.cdr_seen_at
    ):
        return state, None
    if state is None:
        state = CallState(
            call_id=observation.call_id,
            service=observation.service,
            message_id=observation.message_id,
            phone=observation.phone,
            phone_raw=observation.phone_raw,
            country_code=observation.country_code,
        )
    cdr_seen_at = now if observation.source == "cdr" else state.cdr_seen_at
    merged = CallState(
        call_id=state.call_id,
        service=_service(state.service, observation.service),
        message_id=state.message_id,
        phone=state.phone,
        phone_raw=observation.phone_raw if observation.source == "dr" else state.phone_raw,
        country_code=observation.country_code if observation.source == "dr" else state.country_code,
        facts=_merged_facts(state, observation),
        sources=state.sources | {observation.source},
        revision=state.revision + 1,
        first_seen_at=state.first_seen_at or now,
        updated_at=max(state.updated_at or now, now),
        cdr_seen_at=cdr_seen_at,
        given_by_dr=_given_by_dr(state, observation),
        reported=_reported(state, observation),
    )
    if state.revision and _same_inputs(merged, state):
        return replace(state, cdr_seen_at=cdr_seen_at), None
    content = _content(merged)
    if state.revision and content == _content(state):
        return replace(state, cdr_seen_at=cdr_seen_at), None
    return merged, event(merged, content)


def _same_inputs(one: CallState, other: CallState) -> bool:
    """Whether two states of one call agree on everything `_content` reads (a repeat makes
    no change to them): their contents are then equal without being made."""
    return (
        one.facts == other.facts
        and one.sources == other.sources
        and one.reported == other.reported
        and one.given_by_dr == other.given_by_dr
        and one.service == other.service
        and one.phone_raw == other.phone_raw
        and one.country_code == other.country_code
    )


def cost(facts: Mapping[str, Any]) -> Decimal | None:
    """cycles x unit price for a connected call; the basic price for one not connected."""
    cycles, unit = facts.get("cycles"), facts.get("unit_price")
    if _costs_basic_price(facts):
        return Decimal(facts["basic_price"])
    if cycles is None or unit is None:
        return None
    return Decimal(cycles) * Decimal(unit)


def cost_final(state: CallState) -> bool:
    """The DR was seen and gave every price the cost is made of: no CDR row can change it."""
    inputs = {"basic_price"} if _costs_basic_price(state.facts) else {"cycles", "unit_price"}
    return "dr" in state.sources and inputs <= state.given_by_dr


def _costs_basic_price(facts: Mapping[str, Any]) -> bool:
    return facts.get("connected") is False and facts.get("basic_price") is not None


def _content(state: CallState) -> dict[str, Any]:
    facts = state.facts
    return {
        "schema_version": SCHEMA_VERSION,
        "call_id": state.call_id,
        "service": state.service,
        "message_id": state.message_id,
        "phone": state.phone,
        "phone_raw": state.phone_raw,
        "country_code": state.country_code,
        "display_number": facts.get("display_number"),
        "connected": facts.get("connected"),
        "result_raw": facts.get("result_raw"),
        "hangup_cause": facts.get("hangup_cause"),
        "hangup_disposition": facts.get("hangup_disposition"),
        "ivr_result": facts.get("ivr_result"),
        "record_url": facts.get("record_url"),
        "started_at": _time(facts.get("started_at")),
        "ended_at": _time(facts.get("ended_at")),
        "connected_at": _time(facts.get("connected_at")),
        "duration_seconds": facts.get("duration_seconds"),
        "billing": {
            "cycle_seconds": facts.get("cycle_seconds"),
            "cycles": facts.get("cycles"),
            "unit_price": _money(facts.get("unit_price")),
            "basic_price": _money(facts.get("basic_price")),
            "cost": _money(cost(facts)),
            "cost_final": cost_final(state),
        },
        "cdr_id": facts.get("cdr_id"),
        "sources": sorted(state.sources),
        "reports": {"dr": _report(state.reported.get("dr")),
                    "cdr": _report(state.reported.get("cdr"))},
    }  # fmt: skip


def _report(figures: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """One source's own billing figures, as it reported them (the merge's `billing` takes
    the DR's where it gave them): what reconciling the two needs."""
    if figures is None:
        return None
    return {
        "duration_seconds": figures.get("duration_seconds"),
        "cycle_seconds": figures.get("cycle_seconds"),
        "cycles": figures.get("cycles"),
        "connected": figures.get("connected"),
        "cost": _money(cost(figures)),
    }


def event(state: CallState, content: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state's event; `content` is `_content(state)` when the caller has it."""
    content = content if content is not None else _content(state)
    digest = hashlib.blake2b(orjson.dumps(content, option=orjson.OPT_SORT_KEYS), digest_size=16)
    digest.update(f"|{state.revision}".encode())
    assert state.first_seen_at is not None
    assert state.updated_at is not None
    return {
        **content,
        "event_id": digest.hexdigest(),
        "revision": state.revision,
        "first_seen_at": rfc3339(state.first_seen_at),
        "updated_at": rfc3339(state.updated_at),
    }


def expired(state: CallState, now: datetime, horizon: timedelta) -> bool:
    return state.updated_at is not None and now - state.updated_at > horizon


def missing(state: CallState, now: datetime, dr_grace: timedelta) -> Literal["dr", "cdr"] | None:
    """Which source a call still lacks past its wait: "dr" when it has CDR rows but no DR
    `dr_grace` after it was first seen (the DR push was lost), "cdr" when it has a DR but no
    CDR row after a day (the poller missed the row)."""
    if state.first_seen_at is None:
        return None
    waited = now - state.first_seen_at
    if "dr" not in state.sources and "cdr" in state.sources and waited > dr_grace:
        return "dr"
    if "cdr" not in state.sources and "dr" in state.sources and waited > CDR_GRACE:
        return "cdr"
    return None


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else rfc3339(moment)


def _money(amount: Decimal | None) -> str | None:
    """One spelling per amount, whichever source gave it: the DR's "0.050" and the CDR's
    0.05 are the same price, and a call must not change revision for a trailing zero."""
    if amount is None:
        return None
    return "0" if amount.is_zero() else format(amount.normalize(), "f")


Seen = TypeVar("Seen")


@dataclass
class Batch(Generic[Seen]):
    """What merging a batch of observations decided: the events to emit, in order, and
    each changed call's final state with the last input that changed it."""

    events: list[dict[str, Any]] = field(default_factory=list)
    changed: dict[str, tuple[Seen, CallState]] = field(default_factory=dict)


def merge_batch(
    observed: Iterable[tuple[Seen, Observation, datetime]],
    stored: Callable[[str], CallState | None],
) -> Batch[Seen]:
    """Merge observations in order, each on top of the batch's own changes to its call."""
    batch: Batch[Seen] = Batch()
    for seen, observation, now in observed:
        earlier = batch.changed.get(observation.call_id)
        state = earlier[1] if earlier else stored(observation.call_id)
        merged, event = merge(state, observation, now)
        if event is not None:
            batch.changed[observation.call_id] = (seen, merged)
            batch.events.append(event)
    return batch
