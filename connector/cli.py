"""`nxcloud-connector` and `python -m connector`: one subcommand per component."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final

from aiokafka.errors import KafkaError

from connector import __version__, acls, admin, clients
from connector.clock import utcnow
from connector.errors import (
    ConfigError,
    ConnectorError,
    KafkaUnreachable,
    OutputClosed,
    RegistryUnreachable,
    SchemaRefused,
)
from connector.local import broker, stack
from connector.local.security import ADMIN, Security
from connector.settings import Settings
from connector.topics import TopicNames, declare

Command = Callable[[argparse.Namespace], int]


EXIT_DRIFT: Final = 1
EXIT_USAGE: Final = 2  # argparse's own
EXIT_CONFIG: Final = ConfigError.exit_code
EXIT_KAFKA: Final = KafkaUnreachable.exit_code
EXIT_FAILED: Final = ConnectorError.exit_code
EXIT_REFUSED_SCHEMA: Final = SchemaRefused.exit_code
EXIT_REGISTRY: Final = RegistryUnreachable.exit_code
EXIT_CHECK: Final = 8
EXIT_INTERRUPTED: Final = 130
ENVIRONMENT: Final = (
    "Configuration comes from environment variables (KAFKA_*, NXCLOUD_*), read once at "
    "start; docs/configuration.md lists every one. Exit codes: 0 done, "
    f"{EXIT_DRIFT} topics not as declared, {EXIT_USAGE} usage, {EXIT_CONFIG} configuration, "
    f"{EXIT_KAFKA} Kafka unreachable or refused, {EXIT_FAILED} other failure, "
    f"{EXIT_REFUSED_SCHEMA} schema refused by the registry, {EXIT_REGISTRY} registry "
    f"unreachable, {EXIT_CHECK} a `check` failed, "
    f"{EXIT_INTERRUPTED} interrupted."
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Until a command sets logging up, aiokafka's retries are not printed next to the one
    # line that says what failed.
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    command: Command = args.command
    try:
        return command(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OutputClosed:
        # Nobody reads on (`| head`): done, and nothing left to say; Python's own flush of
        # stdout at exit would fail on the closed pipe, so it goes nowhere instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        message, code = failure(exc)
        print(f"nxcloud-connector: {message}", file=sys.stderr)
        return code


def failure(exc: BaseException) -> tuple[str, int]:
    """One line and an exit code for what stopped a command; a bug keeps its traceback."""
    if isinstance(exc, ConnectorError):
        return str(exc), exc.exit_code
    if isinstance(exc, KafkaError | ConnectionError | TimeoutError):
        name, detail = type(exc).__name__, str(exc)
        if not detail.startswith(name):
            detail = f"{name}: {detail}" if detail else name
        return f"Kafka: {detail} (see KAFKA_BOOTSTRAP_SERVERS)", EXIT_KAFKA
    raise exc


class _Command(argparse.ArgumentParser):
    """A subcommand's parser: its --help ends saying where configuration comes from."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(epilog=ENVIRONMENT, **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nxcloud-connector",
        description="Carries NXCloud voice call outcomes into Kafka.",
        epilog=ENVIRONMENT,
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND", parser_class=_Command)

    _add_kafka(commands)

    topics = commands.add_parser(
        "topics", help="create the connector's topics where missing and report drift"
    )
    topics.add_argument(
        "--check",
        action="store_true",
        help="only report; create nothing (exit 1 if not as declared)",
    )
    topics.set_defaults(command=run_topics)

    receiver = commands.add_parser("receiver", help="serve the DR push endpoint")
    receiver.set_defaults(command=run_receiver)

    poller = commands.add_parser("poller", help="poll the CDR query API into Kafka")
    poller.set_defaults(command=run_poller)

    backfill = commands.add_parser("backfill", help="poll a past range of CDRs once, then exit")
    backfill.add_argument("--since", required=True, help="ISO 8601; no zone means NXCLOUD_TIMEZONE")
    backfill.add_argument("--until", required=True, help="ISO 8601; no zone means NXCLOUD_TIMEZONE")
    backfill.set_defaults(command=run_backfill)

    sandbox = commands.add_parser("sandbox", help="a local stand-in for NXCloud")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8090)
    sandbox.add_argument("--seed", type=int, default=1)
    sandbox.add_argument("--rate", type=float, default=1.0, help="messages per second")
    sandbox.add_argument("--history-hours", type=float, default=1.0)
    sandbox.add_argument("--push-to", default=None, help="receiver URL to push each DR to")
    sandbox.add_argument("--appkey", default="sandbox")
    sandbox.add_argument("--secretkey", default="sandbox")
    _add_gaps(sandbox)
    sandbox.set_defaults(command=run_sandbox)

    worker = commands.add_parser("worker", help="merge DRs and CDRs into call events (Faust)")
    worker.set_defaults(command=run_worker)

    up = commands.add_parser("up", help="run the whole pipeline locally, with a local Kafka")
    up.add_argument(
        "--verbose", action="store_true", help="show every log line, not only warnings and errors"
    )
    up.add_argument("--kafka-port", type=int, default=9092, help="the local Kafka's port (9092)")
    up.add_argument(
        "--controller-port", type=int, default=0, help="the local Kafka's controller port (port+1)"
    )
    up.add_argument("--sandbox-port", type=int, default=8090, help="the sandbox's port (8090)")
    up.add_argument(
        "--host", default="127.0.0.1",
        help="where the receiver, its management port, the metrics and the sandbox listen "
        "(127.0.0.1: this machine only; NXCLOUD_*_HOST variables take precedence)",
    )  # fmt: skip
    up.set_defaults(command=run_up)

    _add_tail(commands)

    replay = commands.add_parser(
        "replay", help="reprocess raw records of a time range through normalize and merge"
    )
    replay.add_argument("--source", choices=["dr", "cdr", "all"], default="all")
    replay.add_argument("--since", required=True, help="ISO 8601; no zone means NXCLOUD_TIMEZONE")
    replay.add_argument("--until", default=None, help="ISO 8601 (default: now)")
    replay.add_argument(
        "--into", default=None, metavar="TOPIC",
        help="merge afresh into this new call-event topic instead of the running worker",
    )  # fmt: skip
    replay.set_defaults(command=run_replay)

    redrive = commands.add_parser("redrive", help="send dead letters back through the pipeline")
    redrive.add_argument("--since", default=None, help="ISO 8601 (default: all dead letters)")
    redrive.set_defaults(command=run_redrive)
    for add in (_add_schema, _add_registry, _add_check, _add_reconciliation, _add_reconcile):
        add(commands)
    return parser


def _add_gaps(sandbox: argparse.ArgumentParser) -> None:
    """What a reconciliation finds in the sandbox's traffic."""
    sandbox.add_argument("--lost-pushes", type=float, default=0.03,
                         help="share of calls whose DR push is lost: CDR-only (0.03)")  # fmt: skip
    sandbox.add_argument("--unlisted", type=float, default=0.02,
                         help="share of calls the CDR query never has: DR-only (0.02)")  # fmt: skip


def _add_reconciliation(commands: argparse._SubParsersAction[_Command]) -> None:
    reconciler = commands.add_parser(
        "reconciler",
        help="keep each day's reconciliation current on nxcloud.voice.reconciliation",
    )
    reconciler.add_argument(
        "--once", action="store_true",
        help="read the call events to their end, write every day's figures, then exit "
        "(a rebuild, in memory)",
    )  # fmt: skip
    reconciler.add_argument("--source", default=None, metavar="TOPIC",
                            help="with --once: the call events to read (e.g. one "
                            "`replay --into` made)")  # fmt: skip
    reconciler.add_argument("--into", default=None, metavar="TOPIC",
                            help="with --once: the reconciliation topic to write "
                            "(created like nxcloud.voice.reconciliation)")  # fmt: skip
    reconciler.set_defaults(command=run_reconciler)


def _add_reconcile(commands: argparse._SubParsersAction[_Command]) -> None:
    from connector.reconciliation import KINDS

    reconcile = commands.add_parser(
        "reconcile",
        help="print each day's reconciliation: what NXCloud billed against what reached us",
    )
    reconcile.add_argument("--day", default=None, help="YYYY-MM-DD, today or yesterday")
    reconcile.add_argument("--since", default=None, help="the first day (with --until)")
    reconcile.add_argument("--until", default=None, help="the last day, included")
    shown = reconcile.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="JSON instead of a table")
    shown.add_argument("--csv", action="store_true", help="CSV instead of a table")
    reconcile.add_argument(
        "--calls", default=None, choices=sorted(KINDS), metavar="KIND",
        help=f"list the calls behind a number instead: {', '.join(sorted(KINDS))}",
    )  # fmt: skip
    reconcile.add_argument(
        "--topic", default=None, help="a rebuilt reconciliation topic instead of the live one"
    )
    reconcile.set_defaults(command=run_reconcile)


def run_reconcile(args: argparse.Namespace) -> int:
    from connector import report

    _quiet_kafka_clients()
    settings = Settings.from_env()
    names = TopicNames.of(settings)
    now = utcnow()
    today = now.astimezone(settings.nxcloud_timezone).date()
    if args.day and (args.since or args.until):
        raise ConfigError("give --day, or --since and --until, not both")
    if args.day:
        days = [report.parse_day(args.day, today)]
    else:
        first = report.parse_day(args.since or args.until or "yesterday", today)
        days = report.days_between(first, report.parse_day(args.until or "today", today))
    fmt = "json" if args.json else "csv" if args.csv else "table"
    if args.calls:
        found = asyncio.run(report.calls(settings, names, days, args.calls, now))
    else:
        found = asyncio.run(report.records(settings, args.topic or names.reconciliation, days))
        if not found:
            print(f"no reconciliation for {days[0]}{f' to {days[-1]}' if len(days) > 1 else ''}"
                  " yet: is `nxcloud-connector reconciler` running?", file=sys.stderr)  # fmt: skip
    report.show(found, fmt=fmt, listing=bool(args.calls))
    return 0


def run_reconciler(args: argparse.Namespace) -> int:
    from connector import logs
    from connector.reconciler import loop

    settings = Settings.from_env()
    if (args.source or args.into) and not args.once:
        raise ConfigError("--source and --into rebuild a reconciliation: give --once too")
    if not args.once:
        logs.configure(settings.log_level)
        return asyncio.run(loop.reconcile_forever(settings))
    _quiet_kafka_clients()
    written = asyncio.run(loop.rebuild(settings, source=args.source, into=args.into))
    print(f"groups written: {written}")
    return 0


def _add_kafka(commands: argparse._SubParsersAction[_Command]) -> None:
    kafka = commands.add_parser(
        "kafka", help="run a local Apache Kafka (one node, or a cluster) in the foreground"
    )
    kafka.add_argument("--port", type=int, default=9092, help="broker port (default 9092)")
    kafka.add_argument(
        "--controller-port", type=int, default=0, help="KRaft controller port (default port+1)"
    )
    kafka.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the broker keeps its data across restarts "
        f"(default {broker.default_data_dir()}, with --secure {secure_data_dir()})",
    )
    kafka.add_argument("--heap", default="512m", help="JVM heap (default %(default)s)")
    kafka.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="nodes (default 1); with more, ports are PORT, PORT+1, ... and controller "
        "ports follow them; replication and min.insync.replicas as in production",
    )
    kafka.add_argument(
        "--secure",
        action="store_true",
        help="SASL_SSL (SCRAM-SHA-512) on --port and mutual TLS on port+2, generated "
        "certificates, ACLs enforced; one user per component with the connector's ACLs",
    )
    kafka.set_defaults(command=run_kafka)


def _add_tail(commands: argparse._SubParsersAction[_Command]) -> None:
    tail = commands.add_parser(
        "tail",
        help="print call events: a line each on a terminal, JSON lines when piped or with --json",
    )
    tail.add_argument("--from-beginning", action="store_true", help="not only new events")
    tail.add_argument("--call-id", default=None, help="only this call")
    tail.add_argument("--message-id", default=None, help="only the calls of this messageid")
    tail.add_argument(
        "--phone", default=None, help="only this phone number, with its country code (E.164)"
    )
    tail.add_argument(
        "--limit", type=_count, default=None, help="stop after exactly this many events"
    )
    tail.add_argument(
        "--json", action="store_true", help="JSON lines on a terminal too (always when piped)"
    )
    tail.set_defaults(command=run_tail)


def _add_check(commands: argparse._SubParsersAction[_Command]) -> None:
    from connector.check import COMPONENTS

    check = commands.add_parser(
        "check",
        help="try the configuration for real: Kafka, its login, the topics, this component's "
        "ACLs, the schema registry, NXCloud's CDR API, the push port's TLS files; a line each",
    )
    check.add_argument(
        "--component", choices=COMPONENTS, default="all",
        help="check what this component needs, with its ACLs (default: all of them)",
    )  # fmt: skip
    check.set_defaults(command=run_check)


def run_check(args: argparse.Namespace) -> int:
    from connector import check

    _quiet_kafka_clients()
    settings = Settings.from_env()
    results = asyncio.run(check.run(settings, args.component, utcnow()))
    for line in check.report(results):
        print(line, flush=True)
    return 0 if check.passed(results) else EXIT_CHECK


def _add_schema(commands: argparse._SubParsersAction[_Command]) -> None:
    schema = commands.add_parser(
        "schema", help="print a shipped JSON Schema, or list them with their ids"
    )
    schema.add_argument("name", nargs="?", default=None, help="e.g. call-event or call-event.v1")
    schema.set_defaults(command=run_schema)


def _add_registry(commands: argparse._SubParsersAction[_Command]) -> None:
    registry = commands.add_parser(
        "registry",
        help="register every public topic's value schema in the schema registry "
        "(NXCLOUD_REGISTRY_URL, its Confluent-compatible API) and set its compatibility",
    )
    registry.set_defaults(command=run_registry)


def run_registry(_args: argparse.Namespace) -> int:
    from connector import registry

    settings = Settings.from_env()
    if settings.registry_url is None:
        raise ConfigError("missing configuration: NXCLOUD_REGISTRY_URL must be set")
    done = asyncio.run(registry.register_all(settings, TopicNames.of(settings)))
    for each in done:
        print(f"registered {each.subject:<40} id {each.id:<6} version {each.version}"
              f"  {registry.COMPATIBILITY}")  # fmt: skip
    return 0


def run_schema(args: argparse.Namespace) -> int:
    from connector import schema

    if args.name is None:
        for name in schema.names():
            print(f"{name:<16} {schema.schema_id(name)}")
        return 0
    sys.stdout.write(schema.text(args.name))
    return 0


def run_tail(args: argparse.Namespace) -> int:
    from connector.tail import matcher, tail

    _quiet_kafka_clients()
    settings = Settings.from_env()
    names = TopicNames.of(settings)
    asyncio.run(
        tail(
            settings, names.call_events,
            from_beginning=args.from_beginning,
            wanted=matcher(args.call_id, args.message_id, args.phone), limit=args.limit,
            as_json=True if args.json else None,
        )
    )  # fmt: skip
    return 0


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of 1 or more")
    return int(text)


def run_replay(args: argparse.Namespace) -> int:
    from connector import replay
    from connector.poller.backfill import parse_moment

    _quiet_kafka_clients()
    settings = Settings.from_env()
    since = parse_moment(args.since, settings, "--since")
    until = parse_moment(args.until, settings, "--until") if args.until else None
    progress = replay.Progress()
    if args.into:
        summary = asyncio.run(
            replay.rebuild(settings, into=args.into, since=since, until=until, progress=progress)
        )
        replay.print_summary(summary, extra=[f"written to:     {args.into}"])
    else:
        summary = asyncio.run(
            replay.replay(settings, source=args.source, since=since, until=until, now=utcnow(),
                          progress=progress)
        )  # fmt: skip
        replay.print_summary(summary)
    return 0


def run_redrive(args: argparse.Namespace) -> int:
    from connector import replay
    from connector.poller.backfill import parse_moment

    _quiet_kafka_clients()
    settings = Settings.from_env()
    since = parse_moment(args.since, settings, "--since") if args.since else None
    summary = asyncio.run(replay.redrive(settings, since, replay.Progress()))
    print(f"dead letters read:  {summary.read}")
    print(f"sent back:          {summary.observations}")
    print(f"still failing:      {summary.dead_letters} (they stay in the dead-letter topic)")
    return 0


def secure_data_dir() -> Path:
    return broker.default_data_dir().with_name("kafka-secure")


def run_kafka(args: argparse.Namespace) -> int:
    if args.secure and args.brokers > 1:
        raise ConfigError("--secure runs one broker: leave out --brokers")
    default = secure_data_dir() if args.secure else broker.default_data_dir()
    data_dir = (args.data_dir or default).expanduser().resolve()
    local: broker.LocalKafka | broker.LocalCluster
    security = None
    if args.brokers > 1:
        ports = [args.port + i for i in range(args.brokers)]
        first = args.controller_port or args.port + args.brokers
        controllers = [first + i for i in range(args.brokers)]
        local = broker.LocalCluster(broker.cluster_configs(data_dir, ports, controllers, args.heap))
    else:
        controller = args.controller_port or args.port + 1
        if args.secure:
            security = Security(data_dir / "tls", args.port, controller + 1, acls.COMPONENTS)
        config = broker.BrokerConfig(
            data_dir=data_dir,
            port=args.port,
            controller_port=controller,
            heap=args.heap,
            security=security,
        )
        local = broker.LocalKafka(config)
    # Both, explicitly: a job a script starts in the background inherits SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    print(f"Starting Apache Kafka {broker.KAFKA_VERSION} (data in {data_dir}) ...", flush=True)
    with local:
        if security is None:
            print(f"KAFKA_BOOTSTRAP_SERVERS={local.bootstrap_servers}", flush=True)
        else:
            _secure(security)
        print(f"Log: {local.log_file}. Stop with Ctrl-C.", flush=True)
        try:
            code = local.wait()
        except KeyboardInterrupt:
            print("Stopping Kafka ...", flush=True)
            return 0
    print(f"Kafka exited on its own with status {code}; see {local.log_file}", file=sys.stderr)
    return 1


def _secure(security: Security) -> None:
    """Grant each component's user its ACLs; print where each one's settings are."""
    admin_settings = Settings.from_env({**os.environ, **security.sasl_env(ADMIN)})

    async def grant() -> None:
        async with admin.admin_client(admin_settings) as client:
            for user, granted in acls.grants(admin_settings).items():
                await acls.apply(client, user, granted)

    asyncio.run(grant())
    print(f"SASL_SSL (SCRAM-SHA-512): 127.0.0.1:{security.sasl_port}", flush=True)
    print(f"mutual TLS:               127.0.0.1:{security.mtls_port}", flush=True)
    print(f"CA certificate:           {security.ca_file}", flush=True)
    print("Client settings, one file per user (passwords inside, not shown here):")
    for user in security.everyone:
        env_file = security.directory / f"{user}.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in security.sasl_env(user).items()))
        env_file.chmod(0o600)
        print(f"  {user:<9} set -a; . {env_file}; set +a", flush=True)
    example = security.mtls_env("operator")
    print("Mutual TLS instead, e.g. the operator:", flush=True)
    for key, value in example.items():
        print(f"  {key}={value}", flush=True)


def _quiet_kafka_clients() -> None:
    """A one-shot command reports a refused or unreachable Kafka in one line of its own;
    aiokafka's connection errors would repeat it without the variable to check."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_receiver(_args: argparse.Namespace) -> int:
    from connector import logs
    from connector.receiver import server

    settings = Settings.from_env()
    logs.configure(settings.log_level)
    return server.run(settings)


def run_poller(_args: argparse.Namespace) -> int:
    from connector import logs
    from connector.poller.loop import poll

    settings = Settings.from_env()
    settings.credentials()
    logs.configure(settings.log_level)
    return asyncio.run(poll(settings))


def run_backfill(args: argparse.Namespace) -> int:
    from connector.poller.backfill import backfill, parse_moment

    _quiet_kafka_clients()
    settings = Settings.from_env()
    since = parse_moment(args.since, settings, "--since")
    until = parse_moment(args.until, settings, "--until")
    pages, rows = asyncio.run(backfill(settings, since, until, now=utcnow()))
    print(f"backfilled {rows} rows in {pages} pages")
    return 0


def run_sandbox(args: argparse.Namespace) -> int:
    from datetime import timedelta

    import uvicorn

    from connector import logs
    from connector.local import sandbox

    logs.configure(Settings.from_env().log_level)
    world = sandbox.World(args.seed, utcnow() - timedelta(hours=args.history_hours), args.rate)
    stand_in = sandbox.Sandbox(
        world, appkey=args.appkey, secretkey=args.secretkey, push_to=args.push_to,
        lost_pushes=args.lost_pushes, unlisted=args.unlisted,
    )  # fmt: skip
    uvicorn.run(
        sandbox.create_app(stand_in), host=args.host, port=args.port, log_config=None,
        access_log=False,
    )  # fmt: skip
    return 0


def run_worker(_args: argparse.Namespace) -> int:
    import faust
    import uvloop

    from connector import logs
    from connector.worker import telemetry
    from connector.worker.agents import changelog_topic, create_app

    settings = Settings.from_env()
    logs.configure(settings.log_level)
    asyncio.run(clients.check(settings))  # a refused login is one line, not a retry loop
    metrics = telemetry.WorkerMetrics() if settings.worker_metrics_port else None
    if metrics is not None:
        metrics.serve(settings.worker_metrics_port, settings.metrics_host)
    names = TopicNames.of(settings)
    sources = [names.dr_raw, names.cdr_raw, names.observations]
    asyncio.run(admin.await_topics(settings, sources))
    copartitioned(
        asyncio.run(admin.partition_counts(settings, [*sources, changelog_topic(settings)]))
    )
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last
    app = create_app(settings, names, metrics)
    # Our JSON logging, no banner, no spinner (then Faust logs "Ready").
    worker = faust.Worker(
        app, loglevel=settings.log_level, quiet=True, override_logging=False,
        redirect_stdouts=False,
    )  # fmt: skip
    worker.spinner = None
    worker.execute_from_commandline()


def copartitioned(partitions: dict[str, int]) -> None:
    """The worker's source topics and its changelog have one partition count: a call's DR,
    its CDR rows and its state share a partition number."""
    if len(set(partitions.values())) > 1:
        counts = ", ".join(f"{topic} {count}" for topic, count in sorted(partitions.items()))
        raise ConnectorError(
            "the worker's topics must have the same number of partitions (co-partitioned), "
            f"found: {counts}; see `nxcloud-connector topics` and docs/operations.md"
        )


def run_up(args: argparse.Namespace) -> int:
    ports = stack.Ports(args.kafka_port, args.controller_port, args.sandbox_port, args.host)
    return stack.up(Settings.from_env(), verbose=args.verbose, ports=ports)


def run_topics(args: argparse.Namespace) -> int:
    _quiet_kafka_clients()
    settings = Settings.from_env()
    return asyncio.run(_topics(settings, check_only=args.check))


async def _topics(settings: Settings, *, check_only: bool) -> int:
    applied = await admin.converge(settings, declare(settings), create=not check_only)
    result, created = applied.plan, applied.created
    for name in created:
        print(f"created  {name}")
    for name in result.matching:
        if name not in created:
            print(f"ok       {name}")
    for spec in result.create:
        print(f"missing  {spec.name}")
    for drift in result.drift:
        print(f"drift    {drift}")
    return 1 if result.drift or result.create else 0
