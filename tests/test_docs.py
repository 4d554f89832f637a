"""The documentation cannot drift: the configuration table, the README's length, the links.

Pure: no broker. Paths are resolved from this file, so the test reads this checkout's
README.md and docs/, whatever copy of the package is installed.
"""

import dataclasses
import re
from collections import Counter
from pathlib import Path

import pytest

from connector.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
README_MAX_LINES = 200

# [text](target): the text may span lines; the target has no spaces.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|")
FENCE = re.compile(r"^\s*(```|~~~)")


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> str:
    """The text without its fenced code blocks (a link or heading there is not one)."""
    kept: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            kept.append(line)
    return "\n".join(kept)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped but `-` and `_`,
    spaces to `-`."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in a page; a repeated heading gets `-1`, `-2`, ... as on
    GitHub."""
    seen: Counter[str] = Counter()
    found: set[str] = set()
    for line in _prose(page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if not match:
            continue
        base = anchor(match.group(1))
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def documented_variables() -> list[str]:
    """The variables named in the first column of docs/configuration.md's tables."""
    lines = CONFIGURATION.read_text(encoding="utf-8").splitlines()
    return [m.group(1) for line in lines if (m := ROW.match(line))]


def test_the_anchor_rule() -> None:
    assert anchor("Replay, rebuild and redrive") == "replay-rebuild-and-redrive"
    assert anchor("The receiver's and the poller's metrics") == (
        "the-receivers-and-the-pollers-metrics"
    )
    assert anchor("RocksDB in production") == "rocksdb-in-production"
    assert anchor("`NXCLOUD_SPOOL_DIR` and -x_y") == "nxcloud_spool_dir-and--x_y"


def test_the_configuration_table_lists_exactly_what_settings_reads() -> None:
    read = [str(f.metadata["env"]) for f in dataclasses.fields(Settings)]
    documented = documented_variables()
    assert len(read) == len(set(read))
    repeated = sorted(name for name, n in Counter(documented).items() if n > 1)
    assert not repeated, f"listed more than once in {CONFIGURATION.name}: {repeated}"
    missing = sorted(set(read) - set(documented))
    assert not missing, f"read by Settings but not in {CONFIGURATION.name}: {missing}"
    extra = sorted(set(documented) - set(read))
    assert not extra, f"in {CONFIGURATION.name} but not read by Settings: {extra}"


def test_the_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    linked = {(README.parent / t.split("#")[0]).resolve() for t in LINK.findall(text)}
    unlinked = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken: list[str] = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.name}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"
