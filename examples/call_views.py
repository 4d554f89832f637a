"""The example consumer's PostgreSQL tables, its upsert, and views a billing team wants.

The event is kept whole as JSONB; the views read it. Money is `numeric` (the events carry
decimal strings), times `timestamptz`. "Without a DR" uses the worker's default grace,
4 hours (NXCLOUD_WORKER_DR_GRACE_SECONDS): change the view where yours differs.
"""

from __future__ import annotations

from typing import Final

POSTGRES: Final = (
    """
    CREATE TABLE IF NOT EXISTS calls (
        call_id    TEXT PRIMARY KEY,
        updated_at TIMESTAMPTZ NOT NULL,
        revision   INTEGER NOT NULL,
        event_id   TEXT NOT NULL,
        event      JSONB NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS reconciliation (
        day          DATE NOT NULL,
        service      TEXT NOT NULL,
        country_code TEXT NOT NULL,
        updated_at   TIMESTAMPTZ NOT NULL,
        status       TEXT NOT NULL,
        record       JSONB NOT NULL,
        PRIMARY KEY (day, service, country_code)
    )
    """,
    # Each day's reconciliation as columns, money as numeric (docs/reconciliation.md).
    """
    CREATE OR REPLACE VIEW reconciliation_figures AS
    SELECT day, service, country_code, status, (record->>'cdr_settled')::boolean AS cdr_settled,
           (record->>'calls')::integer AS calls, (record->>'matched')::integer AS matched,
           (record->>'cdr_only')::integer AS cdr_only, (record->>'dr_only')::integer AS dr_only,
           (record->>'awaiting_dr')::integer AS awaiting_dr,
           (record->>'awaiting_cdr')::integer AS awaiting_cdr,
           (record->>'cost')::numeric AS cost, (record->>'dr_cost')::numeric AS dr_cost,
           (record->>'cdr_cost')::numeric AS cdr_cost,
           (record->'cost_mismatch'->>'calls')::integer AS cost_mismatch_calls,
           (record->'cost_mismatch'->>'amount')::numeric AS cost_mismatch_amount,
           updated_at
    FROM reconciliation
    """,
    """
    CREATE TABLE IF NOT EXISTS positions (
        topic      TEXT NOT NULL,
        partition  INTEGER NOT NULL,
        next       BIGINT NOT NULL,
        PRIMARY KEY (topic, partition)
    )
    """,
    # Cost per day (UTC, of the call's start) per country and service; the calls whose
    # cost may still change are counted apart.
    """
    CREATE OR REPLACE VIEW cost_per_day AS
    SELECT (COALESCE(event->>'started_at', event->>'first_seen_at')::timestamptz
            AT TIME ZONE 'UTC')::date AS day,
           event->>'country_code' AS country_code,
           event->>'service' AS service,
           count(*) AS calls,
           sum((event->'billing'->>'cost')::numeric) AS cost,
           count(*) FILTER (WHERE NOT (event->'billing'->>'cost_final')::boolean)
               AS calls_cost_not_final
    FROM calls
    GROUP BY 1, 2, 3
    """,
    """
    CREATE OR REPLACE VIEW calls_cost_not_final AS
    SELECT call_id, event->>'service' AS service, event->>'country_code' AS country_code,
           (event->>'started_at')::timestamptz AS started_at,
           (event->'billing'->>'cost')::numeric AS cost, event->'sources' AS sources,
           updated_at
    FROM calls
    WHERE NOT (event->'billing'->>'cost_final')::boolean
    """,
    """
    CREATE OR REPLACE VIEW calls_without_dr AS
    SELECT call_id, event->>'service' AS service, event->>'country_code' AS country_code,
           event->>'message_id' AS message_id,
           (event->>'first_seen_at')::timestamptz AS first_seen_at, updated_at
    FROM calls
    WHERE NOT (event->'sources') @> '["dr"]'::jsonb
      AND (event->>'first_seen_at')::timestamptz < now() - interval '4 hours'
    """,
)
UPSERT: Final = """
INSERT INTO calls (call_id, updated_at, revision, event_id, event) VALUES (?, ?, ?, ?, ?::jsonb)
ON CONFLICT (call_id) DO UPDATE SET
    updated_at = excluded.updated_at, revision = excluded.revision,
    event_id = excluded.event_id, event = excluded.event
WHERE (excluded.updated_at, excluded.revision) > (calls.updated_at, calls.revision)
"""
RECONCILE: Final = """
INSERT INTO reconciliation (day, service, country_code, updated_at, status, record)
VALUES (?, ?, ?, ?, ?, ?::jsonb)
ON CONFLICT (day, service, country_code) DO UPDATE SET
    updated_at = excluded.updated_at, status = excluded.status, record = excluded.record
WHERE excluded.updated_at > reconciliation.updated_at
"""
