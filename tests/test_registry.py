"""The schema registry: the shipped schemas registered in a real Apicurio Registry through
its Confluent-compatible API, idempotently; an incompatible change refused in one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest

from connector import registry, schema, wire
from connector.errors import ConfigError, RegistryUnreachable, SchemaRefused
from connector.settings import Secret, Settings
from connector.topics import TopicNames
from tests.process_helpers import run_cli

RELEASED = Path(__file__).resolve().parents[1] / "schemas" / "released"


def test_a_framed_value_and_a_plain_one_read_alike() -> None:
    framed = wire.frame(258, b'{"a":1}')
    assert framed[:5] == b"\x00\x00\x00\x01\x02"
    assert wire.unframe(framed) == (258, b'{"a":1}')
    assert wire.unframe(b'{"a":1}') == (None, b'{"a":1}')
    assert wire.payload(framed) == wire.payload(b'{"a":1}')
    with pytest.raises(ValueError, match="at least 5 bytes"):
        wire.unframe(b"\x00\x01")


def test_the_registered_form_is_the_shipped_schema_without_its_draft_and_id() -> None:
    shipped = schema.load(schema.CALL_EVENT)
    registered = orjson.loads(registry.registered_form("call-event"))
    assert "$schema" not in registered
    assert "$id" not in registered
    assert shipped["$id"] in registered["$comment"]
    assert {k: v for k, v in registered.items() if k != "$comment"} == {
        k: v for k, v in shipped.items() if k not in ("$schema", "$id")
    }


def test_registry_settings_that_contradict_each_other_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NXCLOUD_REGISTRY_WIRE_FORMAT=true needs"):
        Settings.from_env({"NXCLOUD_REGISTRY_WIRE_FORMAT": "true"})
    with pytest.raises(ConfigError, match="NXCLOUD_REGISTRY_USERNAME and its password"):
        Settings.from_env({"NXCLOUD_REGISTRY_URL": "http://r", "NXCLOUD_REGISTRY_USERNAME": "u"})
    secret = tmp_path / "password"
    secret.write_text("s3cret-value\n")
    settings = Settings.from_env({
        "NXCLOUD_REGISTRY_URL": "http://r:8080", "NXCLOUD_REGISTRY_USERNAME": "u",
        "NXCLOUD_REGISTRY_PASSWORD_FILE": str(secret),
    })  # fmt: skip
    assert settings.registry_password is not None
    assert settings.registry_password.reveal() == "s3cret-value"
    with pytest.raises(ConfigError) as failed:
        Settings.from_env({"NXCLOUD_REGISTRY_PASSWORD_FILE": str(tmp_path / "missing")})
    assert "NXCLOUD_REGISTRY_PASSWORD_FILE: cannot read a secret" in str(failed.value)


def test_a_registry_that_does_not_answer_is_one_line_without_a_secret() -> None:
    from connector.local.broker import free_port

    settings = Settings(
        registry_url=f"http://me:in-url@127.0.0.1:{free_port()}/apis/ccompat/v7",
        registry_username="me", registry_password=Secret("hunter2"),
    )  # fmt: skip
    with pytest.raises(RegistryUnreachable, match="see NXCLOUD_REGISTRY_URL") as failed:
        asyncio.run(registry.register_all(settings, TopicNames()))
    assert "in-url" not in str(failed.value)
    assert "hunter2" not in str(failed.value)
    assert "hunter2" not in repr(settings)


# The first test to use the registry fetches it (once per machine) and starts it.
@pytest.mark.timeout(600)
def test_registering_twice_keeps_the_ids(schema_registry: str, topic_names: TopicNames) -> None:
    suffix = topic_names.call_events.rsplit(".", 1)[1]
    env = {"NXCLOUD_REGISTRY_URL": schema_registry, "NXCLOUD_TOPIC_SUFFIX": suffix}
    first = run_cli("registry", env=env)
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.splitlines()) == 5
    assert f"{topic_names.call_events}-value" in first.stdout
    again = run_cli("registry", env=env)
    assert (again.returncode, again.stdout) == (0, first.stdout)
    config = httpx.get(f"{schema_registry}/config/{topic_names.call_events}-value").json()
    assert config["compatibilityLevel"] == registry.COMPATIBILITY


def test_an_incompatible_schema_is_refused_in_one_line(
    schema_registry: str, topic_names: TopicNames
) -> None:
    """The subject holds a revision with a property the shipped schema no longer has: the
    shipped one cannot read its records, and the registry says so."""
    name = f"{topic_names.call_events}-value"
    earlier = orjson.loads(registry.registered_form("call-event"))
    earlier["properties"]["legacy"] = {"type": "string"}
    settings = Settings(registry_url=schema_registry)

    async def prepare() -> None:
        async with registry.Registry(settings) as client:
            await client.register(name, orjson.dumps(earlier).decode())
            await client.set_compatibility(name)
            with pytest.raises(SchemaRefused, match=name):
                await client.register(name, registry.registered_form("call-event"))

    asyncio.run(prepare())
    suffix = topic_names.call_events.rsplit(".", 1)[1]
    env = {"NXCLOUD_REGISTRY_URL": schema_registry, "NXCLOUD_TOPIC_SUFFIX": suffix}
    refused = run_cli("registry", env=env)
    assert refused.returncode == SchemaRefused.exit_code == 6
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"nxcloud-connector: the schema registry refuses {name}: ")
    assert "ncompatible" in line


def test_a_writer_waits_for_its_schema_id_and_its_readiness_says_why(tmp_path: Path) -> None:
    marker, seen = tmp_path / "worker" / "not-ready", []
    answers: list[int | None] = [None, None, 42]

    async def attempt() -> int:
        answer = answers.pop(0)
        if answer is None:
            raise RegistryUnreachable("schema registry http://r: ConnectError")
        return answer

    async def sleep(_seconds: float) -> None:
        seen.append(marker.read_text())

    assert asyncio.run(registry.patiently(attempt, sleep, marker)) == 42
    assert seen == ["schema registry http://r: ConnectError\n"] * 2
    assert not marker.exists()


def test_a_release_rolled_back_finds_its_schema_registered_and_keeps_its_id(
    schema_registry: str, topic_names: TopicNames
) -> None:
    """A release whose schema gained a field, then rolled back: the older release's
    `registry` registers nothing new and keeps its id and version, the newer schema stays
    the subject's latest, and the older worker frames with the older id."""
    suffix = topic_names.call_events.rsplit(".", 1)[1]
    env = {"NXCLOUD_REGISTRY_URL": schema_registry, "NXCLOUD_TOPIC_SUFFIX": suffix}
    older = run_cli("registry", env=env)
    assert older.returncode == 0, older.stderr
    name = f"{topic_names.call_events}-value"
    newer = orjson.loads(registry.registered_form("call-event"))
    newer["properties"]["added_later"] = {"type": "string"}
    settings = Settings(registry_url=schema_registry)

    async def release_newer() -> registry.Registered:
        async with registry.Registry(settings) as client:
            return await client.register(name, orjson.dumps(newer).decode())

    assert asyncio.run(release_newer()).version == 2
    rolled_back = run_cli("registry", env=env)
    assert (rolled_back.returncode, rolled_back.stdout) == (0, older.stdout)
    latest = httpx.get(f"{schema_registry}/subjects/{name}/versions/latest").json()
    assert latest["version"] == 2
    first = httpx.get(f"{schema_registry}/subjects/{name}/versions/1").json()
    ids = registry.Ids(Settings(registry_url=schema_registry), topic_names)
    assert asyncio.run(ids.of(topic_names.call_events)) == first["id"] != latest["id"]


def test_the_shipped_call_event_schema_is_accepted_over_its_first_release(
    schema_registry: str, topic_names: TopicNames
) -> None:
    """A deployment whose subject holds call-event v1.0 (before `reports`) registers the
    shipped revision as the subject's next version under BACKWARD_TRANSITIVE."""
    released = orjson.loads((RELEASED / "call-event.v1.0.json").read_bytes())
    identifier = released.pop("$id")
    released.pop("$schema")
    first_form = orjson.dumps({"$comment": f"registered form of {identifier}", **released})
    name = f"{topic_names.call_events}-value"
    settings = Settings(registry_url=schema_registry)

    async def register() -> tuple[registry.Registered, registry.Registered]:
        async with registry.Registry(settings) as client:
            first = await client.register(name, first_form.decode())
            await client.set_compatibility(name)
            return first, await client.register(name, registry.registered_form("call-event"))

    first, shipped = asyncio.run(register())
    assert (first.version, shipped.version) == (1, 2)
    assert schema.schema_id(schema.CALL_EVENT).minor > 0
