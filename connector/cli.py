"""`nxcloud-connector` and `python -m connector`: one subcommand per component."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from connector import __version__, admin, broker, stack
from connector.errors import ConnectorError
from connector.settings import Settings
from connector.topics import TopicNames, declare

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: Command = args.command
    try:
        return command(args)
    except ConnectorError as exc:
        print(f"nxcloud-connector: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nxcloud-connector",
        description="Carries NXCloud voice call outcomes into Kafka.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    kafka = commands.add_parser(
        "kafka", help="run a local single-node Apache Kafka in the foreground"
    )
    kafka.add_argument("--port", type=int, default=9092, help="broker port (default 9092)")
    kafka.add_argument(
        "--controller-port", type=int, default=0, help="KRaft controller port (default port+1)"
    )
    kafka.add_argument(
        "--data-dir",
        type=Path,
        default=broker.default_data_dir(),
        help="where the broker keeps its data across restarts (default %(default)s)",
    )
    kafka.add_argument("--heap", default="512m", help="JVM heap (default %(default)s)")
    kafka.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="nodes (default 1); with more, ports are PORT, PORT+1, ... and controller "
        "ports follow them; replication and min.insync.replicas as in production",
    )
    kafka.set_defaults(command=run_kafka)

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
    sandbox.set_defaults(command=run_sandbox)

    worker = commands.add_parser("worker", help="merge DRs and CDRs into call events (Faust)")
    worker.set_defaults(command=run_worker)

    up = commands.add_parser("up", help="run the whole pipeline locally, with a local Kafka")
    up.set_defaults(command=run_up)

    tail = commands.add_parser("tail", help="print call events as JSON lines")
    tail.add_argument("--from-beginning", action="store_true", help="not only new events")
    tail.add_argument("--call-id", default=None)
    tail.add_argument("--message-id", default=None)
    tail.add_argument("--limit", type=int, default=None, help="stop after this many events")
    tail.set_defaults(command=run_tail)

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
    return parser


def run_tail(args: argparse.Namespace) -> int:
    from connector.tail import matcher, tail

    settings = Settings.from_env()
    names = TopicNames.of(settings)
    asyncio.run(
        tail(
            settings.kafka_bootstrap_servers, names.call_events,
            from_beginning=args.from_beginning,
            wanted=matcher(args.call_id, args.message_id), limit=args.limit,
        )
    )  # fmt: skip
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from connector import replay
    from connector.backfill import parse_moment

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
            replay.replay(settings, source=args.source, since=since, until=until,
                          progress=progress)
        )  # fmt: skip
        replay.print_summary(summary)
    return 0


def run_redrive(args: argparse.Namespace) -> int:
    from connector import replay
    from connector.backfill import parse_moment

    settings = Settings.from_env()
    since = parse_moment(args.since, settings, "--since") if args.since else None
    summary = asyncio.run(replay.redrive(settings, since, replay.Progress()))
    print(f"dead letters read:  {summary.read}")
    print(f"sent back:          {summary.observations}")
    print(f"still failing:      {summary.dead_letters} (they stay in the dead-letter topic)")
    return 0


def run_kafka(args: argparse.Namespace) -> int:
    data_dir = args.data_dir.expanduser().resolve()
    local: broker.LocalKafka | broker.LocalCluster
    if args.brokers > 1:
        ports = [args.port + i for i in range(args.brokers)]
        first = args.controller_port or args.port + args.brokers
        controllers = [first + i for i in range(args.brokers)]
        local = broker.LocalCluster(broker.cluster_configs(data_dir, ports, controllers, args.heap))
    else:
        config = broker.BrokerConfig(
            data_dir=data_dir, port=args.port, controller_port=args.controller_port, heap=args.heap
        )
        local = broker.LocalKafka(config)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"Starting Apache Kafka {broker.KAFKA_VERSION} (data in {data_dir}) ...", flush=True)
    with local:
        print(f"KAFKA_BOOTSTRAP_SERVERS={local.bootstrap_servers}", flush=True)
        print(f"Log: {local.log_file}. Stop with Ctrl-C.", flush=True)
        try:
            code = local.wait()
        except KeyboardInterrupt:
            print("Stopping Kafka ...", flush=True)
            return 0
    print(f"Kafka exited on its own with status {code}; see {local.log_file}", file=sys.stderr)
    return 1


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_receiver(_args: argparse.Namespace) -> int:
    import uvicorn

    from connector import logs
    from connector.receiver import create_app

    settings = Settings.from_env()
    logs.configure()
    uvicorn.run(
        create_app(settings),
        host=settings.receiver_host,
        port=settings.receiver_port,
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=20,
    )
    return 0


def run_poller(_args: argparse.Namespace) -> int:
    from connector import logs
    from connector.service import poll

    settings = Settings.from_env()
    settings.credentials()
    logs.configure()
    return asyncio.run(poll(settings))


def run_backfill(args: argparse.Namespace) -> int:
    from connector.backfill import backfill, parse_moment

    settings = Settings.from_env()
    since = parse_moment(args.since, settings, "--since")
    until = parse_moment(args.until, settings, "--until")
    pages, rows = asyncio.run(backfill(settings, since, until))
    print(f"backfilled {rows} rows in {pages} pages")
    return 0


def run_sandbox(args: argparse.Namespace) -> int:
    from datetime import timedelta

    import uvicorn

    from connector import logs, sandbox
    from connector.clock import utcnow

    logs.configure()
    world = sandbox.World(args.seed, utcnow() - timedelta(hours=args.history_hours), args.rate)
    stand_in = sandbox.Sandbox(
        world, appkey=args.appkey, secretkey=args.secretkey, push_to=args.push_to
    )
    uvicorn.run(
        sandbox.create_app(stand_in), host=args.host, port=args.port, log_config=None,
        access_log=False,
    )  # fmt: skip
    return 0


def run_worker(_args: argparse.Namespace) -> int:
    import uvloop

    from connector.worker import create_app

    settings = Settings.from_env()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = create_app(settings)
    sys.argv = ["nxcloud-connector", "worker", "--loglevel=info", "--without-web"]
    app.main()


def run_up(_args: argparse.Namespace) -> int:
    return stack.up(Settings.from_env())


def run_topics(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    return asyncio.run(_topics(settings, check_only=args.check))


async def _topics(settings: Settings, *, check_only: bool) -> int:
    applied = await admin.converge(
        settings.kafka_bootstrap_servers, declare(settings), create=not check_only
    )
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
