"""The CloudEvents envelope of a call event: Kafka binary-mode headers. Pure.

`ce_source` is `/nxcloud-connector/{NXCLOUD_DEPLOYMENT}/{NXCLOUD_ACCOUNT}` (the account
percent-encoded); `ce_dataschema` is the `$id` of the schema the value follows.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from connector import schema
from connector.settings import Settings

CE_TYPE: Final = "com.nxcloud.voice.call.v1"
CALL_EVENT_SCHEMA: Final = str(schema.schema_id(schema.CALL_EVENT))


def source(settings: Settings) -> str:
    return f"/nxcloud-connector/{settings.deployment}/{quote(settings.account, safe='')}"


def headers(event: dict[str, Any], ce_source: str) -> list[tuple[str, bytes]]:
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event["event_id"].encode()),
        ("ce_source", ce_source.encode()),
        ("ce_type", CE_TYPE.encode()),
        ("ce_subject", event["call_id"].encode()),
        ("ce_time", event["updated_at"].encode()),
        ("ce_dataschema", CALL_EVENT_SCHEMA.encode()),
        ("content-type", b"application/json"),
    ]
