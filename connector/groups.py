"""The Kafka consumer groups of the components: their names, from the settings alone."""

from __future__ import annotations

from connector.settings import Settings


def _suffixed(name: str, settings: Settings) -> str:
    return f"{name}.{settings.topic_suffix}" if settings.topic_suffix else name


def worker(settings: Settings) -> str:
    """The Faust app id: also the consumer group whose commits say what was merged."""
    return _suffixed("nxcloud-worker", settings)


def poller(settings: Settings) -> str:
    """The pollers' election on the checkpoint topic, one group per NXCloud account."""
    return f"nxcloud-poller.{settings.account}"


def reconciler(settings: Settings) -> str:
    """The reconcilers' election: the member that holds the reconciliation topic's one
    partition writes (`connector.reconciler`)."""
    return _suffixed("nxcloud-reconciler", settings)
