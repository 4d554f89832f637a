"""`up`'s terminal: full logs to files, warnings and errors on the terminal, prefixed."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from connector.local.console import Console, alarming, shown

INFO = '{"time":"t","level":"info","logger":"x","message":"polled a page","rows":3}'
WARNING = (
    '{"time":"t","level":"warning","logger":"x","message":"cdr query not answered","attempt":2}'
)


def test_only_warnings_errors_and_foreign_lines_are_alarming() -> None:
    assert not alarming(INFO)
    assert alarming(WARNING)
    assert alarming(WARNING.replace("warning", "error"))
    assert alarming("Traceback (most recent call last):")
    assert not alarming("\n")


def test_a_line_shows_the_component_level_message_and_fields() -> None:
    assert shown("poller", WARNING) == "poller   WARNING cdr query not answered  attempt=2"
    assert shown("worker", "Traceback (most recent call last):\n") == (
        "worker   Traceback (most recent call last):"
    )


def child(lines: list[str]) -> subprocess.Popen[bytes]:
    script = "import sys\nfor line in sys.argv[1:]: print(line)"
    return subprocess.Popen([sys.executable, "-c", script, *lines], stdout=subprocess.PIPE)


def test_follow_writes_everything_to_the_file_and_only_warnings_to_the_terminal(
    tmp_path: Path,
) -> None:
    for verbose, expected in ((False, 1), (True, 2)):
        out = io.StringIO()
        console = Console(out, live=False, verbose=verbose)
        process = child([INFO, WARNING])
        assert process.stdout is not None
        log = tmp_path / f"poller-{verbose}.log"
        console.follow("poller", process.stdout, log).join(10)
        assert process.wait(10) == 0
        assert log.read_text().splitlines() == [INFO, WARNING]
        printed = out.getvalue().splitlines()
        assert len(printed) == expected, printed
        assert printed[-1] == "poller   WARNING cdr query not answered  attempt=2"


def test_a_live_status_is_redrawn_below_the_log_lines() -> None:
    out = io.StringIO()
    console = Console(out, live=True, verbose=False)
    console.status(["  worker   running"])
    console.show("poller   WARNING x")
    console.status(["  worker   exited (1)"])
    assert out.getvalue() == (
        "  worker   running\n"
        "\x1b[1F\x1b[J" "poller   WARNING x\n" "  worker   running\n"
        "\x1b[1F\x1b[J" "  worker   exited (1)\n"
    )  # fmt: skip
