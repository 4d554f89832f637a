"""This release: the version, read from the installed package's metadata (pyproject.toml is
its one source), and the `nxcloud_build_info` gauge every component serves with it."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Gauge

from connector import __version__


def build_info(registry: CollectorRegistry) -> Gauge:
    """`nxcloud_build_info{version, python} 1` in `registry`."""
    gauge = Gauge(
        "nxcloud_build_info",
        "The running release: its version and Python's; always 1",
        ["version", "python"],
        registry=registry,
    )
    gauge.labels(version=__version__, python=platform.python_version()).set(1)
    return gauge
