"""Every record the connector writes is valid against the schema it publishes."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from connector import cdr, deadletters, dr, envelope, schema
from connector.errors import SchemaError
from connector.frames import Damage, Entry
from connector.merge import merge
from connector.normalize import from_cdr, from_dr
from connector.settings import Settings
from tests.support import (
    ARRIVAL,
    CDR,
    CDR_VERIFICATION_ROW,
    DR,
    EXAMPLE_FIELDS,
    VERIFICATION,
    ZONE,
    valid,
    validator,
)

ROOT = Path(__file__).parent.parent
SHIPPED = ROOT / "schemas"  # in the package as connector/schemas, a link to it
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_call_events_of_every_kind_match_the_schema() -> None:
    state, first = merge(None, CDR, T0)
    _, second = merge(state, DR, T0)
    lone_dr = merge(None, from_dr({**VERIFICATION, "messageid": "35618"}, ZONE), T0)[1]
    lone_cdr = merge(None, from_cdr(CDR_VERIFICATION_ROW, 1, ZONE), T0)[1]
    for event in (first, second, lone_dr, lone_cdr):
        valid("call-event.v1.json", event)


def test_an_event_missing_a_field_does_not_match() -> None:
    event = merge(None, CDR, T0)[1]
    assert event is not None
    del event["billing"]["cost"]
    assert list(validator("call-event.v1.json").iter_errors(event))


def test_raw_dr_records_and_dead_letters_match() -> None:
    valid("dr-raw.v1.json", orjson.loads(dr.raw_record(EXAMPLE_FIELDS, ARRIVAL)))
    letter = deadletters.refused_push("bad", ARRIVAL, {"a": ""}, b"a=")
    valid("dead-letter.v1.json", orjson.loads(letter))
    unreadable = deadletters.refused_push(
        "x", ARRIVAL, None, b"\xff", query=b"a=\xb3", request=b"G\xff"
    )
    valid("dead-letter.v1.json", orjson.loads(unreadable))


@pytest.mark.parametrize("service", [0, 1])
def test_raw_cdr_records_match(service: int) -> None:
    window = cdr.Window(service, T0.replace(hour=9), T0)
    row = {"id": 1, "messageid": 2, "phone": "150", "countryCode": "86", "customer_price": 0.1}
    valid("cdr-raw.v1.json", orjson.loads(cdr.raw_record(row, window, 1, T0, "acct")))


def test_each_event_names_the_shipped_schema_that_validates_it() -> None:
    state, first = merge(None, CDR, T0)
    _, second = merge(state, DR, T0)
    for event in (first, second):
        assert event is not None
        headers = dict(envelope.headers(event, envelope.source(Settings())))
        identifier = headers["ce_dataschema"].decode()
        assert identifier == "urn:nxcloud-connector:schema:call-event:v1.1"
        document = schema.resolve(identifier)
        assert not list(Draft202012Validator(document).iter_errors(event))
        assert headers["ce_id"].decode() == event["event_id"]


def test_the_source_names_the_deployment_and_the_account() -> None:
    assert envelope.source(Settings()) == "/nxcloud-connector/default/default"
    settings = Settings(deployment="prod-eu", account="acct 1/x")
    assert envelope.source(settings) == "/nxcloud-connector/prod-eu/acct%201%2Fx"


def test_ids_resolve_to_the_same_or_a_later_minor_version_only() -> None:
    assert schema.resolve("urn:nxcloud-connector:schema:dr-raw:v1.0")["$id"].endswith("v1.0")
    for unknown in (
        "urn:nxcloud-connector:schema:dr-raw:v1.9",
        "urn:nxcloud-connector:schema:dr-raw:v2.0",
        "urn:nxcloud-connector:schema:nope:v1.0",
        "https://nxcloud-connector/schemas/dr-raw.v1.json",
    ):
        with pytest.raises(SchemaError):
            schema.resolve(unknown)


def test_every_schema_has_a_urn_id_matching_its_file() -> None:
    files = sorted(path.name.removesuffix(".json") for path in SHIPPED.glob("*.json"))
    assert schema.names() == files
    for name in files:
        found = schema.schema_id(name)
        assert f"{found.name}.v{found.major}" == name


def test_the_schema_command_lists_and_prints_them() -> None:
    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "connector", "schema", *args],
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout

    listed = run().splitlines()
    assert listed[0].split() == ["call-event.v1", "urn:nxcloud-connector:schema:call-event:v1.1"]
    assert len(listed) == len(schema.names())
    assert run("call-event") == (SHIPPED / "call-event.v1.json").read_text(encoding="utf-8")
    assert orjson.loads(run("dr-raw.v1"))["$id"].endswith(":dr-raw:v1.0")


def test_the_wheel_ships_the_schemas_and_reads_them_from_itself(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True)  # fmt: skip
    (wheel,) = tmp_path.glob("nxcloud_connector-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        inside = {n for n in archive.namelist() if n.startswith("connector/schemas/")}
        assert inside == {f"connector/schemas/{path.name}" for path in SHIPPED.glob("*.json")}
        for path in SHIPPED.glob("*.json"):
            assert archive.read(f"connector/schemas/{path.name}") == path.read_bytes()
    # -S: without site's .pth files, so the editable install of this checkout stays out.
    probe = "import connector, connector.schema as s; print(connector.__file__); print(s.names())"
    env = {"PYTHONPATH": os.pathsep.join([str(wheel), sysconfig.get_paths()["platlib"]])}
    done = subprocess.run([sys.executable, "-S", "-c", probe], env=env, cwd=tmp_path,
                          capture_output=True, text=True, check=True)  # fmt: skip
    where, names = done.stdout.splitlines()
    assert where.startswith(str(wheel))
    assert names == str(schema.names())


def test_the_spools_dead_letters_match(tmp_path: Path) -> None:
    entry = Entry("nxcloud.voice.dr.raw", b"m|8888", b"x" * 5000)
    refused = deadletters.refused_by_kafka("MessageSizeTooLargeError", entry, kept=tmp_path / "r",
                                      receiver="receiver-1")  # fmt: skip
    valid("dead-letter.v1.json", orjson.loads(refused))
    damaged = deadletters.spool_damage(Damage(3, 100, 164, tmp_path / "q"), "receiver-1")
    valid("dead-letter.v1.json", orjson.loads(damaged))


def test_the_workers_dead_letters_match() -> None:
    letter = deadletters.unusable_record("not a raw record", "nxcloud.voice.dr.raw", 0, 7, b"\xff")
    valid("dead-letter.v1.json", orjson.loads(letter))
