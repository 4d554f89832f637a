"""A throwaway PostgreSQL server, for the example consumer's tests and trials.

Debian's server binaries (package `postgresql`, under /usr/lib/postgresql/VERSION/bin, the
newest found; or PG_BIN), `initdb` into a fresh temporary directory, started on a free
port of 127.0.0.1 with its unix socket in that directory, trust authentication. PostgreSQL
refuses to run as root: as root it runs as the user `postgres` (created by the package).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final

from connector.errors import BrokerError
from connector.local.broker import _Started, free_port

POSTGRES_ROOT: Final = Path("/usr/lib/postgresql")
RUN_AS: Final = "postgres"


def binaries() -> Path:
    """PG_BIN, or the newest /usr/lib/postgresql/VERSION/bin with `initdb`."""
    given = os.environ.get("PG_BIN")
    found = [Path(given)] if given else sorted(
        POSTGRES_ROOT.glob("*/bin"), key=lambda path: int(path.parent.name)
        if path.parent.name.isdigit() else 0,
    )  # fmt: skip
    found = [path for path in found if (path / "initdb").exists()]
    if not found:
        raise BrokerError(
            "PostgreSQL's server binaries are required: `apt-get install postgresql` "
            "(or set PG_BIN to the directory of initdb and pg_ctl)"
        )
    return found[-1]


class LocalPostgres(_Started):
    """A server in a temporary directory, removed when it stops; a context manager."""

    def __init__(self) -> None:
        self.port = 0
        self.directory: Path | None = None
        self._bin = Path()
        self._user: pwd.struct_passwd | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            [str(self._bin / command[0]), *command[1:]], capture_output=True, text=True,
            check=False, user=self._user.pw_uid if self._user else None,
            group=self._user.pw_gid if self._user else None, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise BrokerError(f"PostgreSQL {command[0]} failed: " + " | ".join(tail))

    def start(self) -> None:
        self._bin = binaries()
        self.directory = Path(tempfile.mkdtemp(prefix="nxcloud-postgres-"))
        if os.geteuid() == 0:
            self._user = pwd.getpwnam(RUN_AS)
            os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)
        self.port, data = free_port(), self.directory / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c shared_buffers=16MB")  # fmt: skip
        log = str(self.directory / "postgres.log")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", log, "-o", options)

    def stop(self) -> None:
        if self.directory is None:
            return
        try:
            if (self.directory / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D",
                          str(self.directory / "data"))  # fmt: skip
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def kill(self) -> None:
        self.stop()
