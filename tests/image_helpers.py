"""The image of deploy/Dockerfile, built with buildah and run as Kubernetes runs it.

Buildah keeps its storage under `.tools/image/` (vfs driver, chroot isolation: no daemon, no
overlay file system, the host's network). The pinned base cannot be pulled on these
machines, so unless that image is already in this storage, the image is built on a stand-in:
`debootstrap` of the same Debian release with its Python (`python3`, `python3-venv`, and
`python` on the PATH), cached as a tarball beside the Kafka jars (`~/.cache/nxcloud-connector`,
outside the clone) so a second run, or a second clone, skips it. The stand-in trusts
the host's certificate authorities (pip reaches PyPI through them here); the image built on
the pinned base is unchanged by it.

A step that fails raises `StepFailed`, naming the step and giving the end of its output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.local.broker import default_cache_dir

ROOT = Path(__file__).parent.parent
CACHE = ROOT / ".tools" / "image"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
UID = 10001


class StepFailed(AssertionError):
    def __init__(self, step: str, output: str) -> None:
        super().__init__(f"image step {step!r} failed:\n{output[-4000:]}")


def step(name: str, args: Sequence[str], cwd: Path | None = None, timeout: float = 900) -> str:
    """Run one step to its end; its stdout, or StepFailed with what it printed."""
    try:
        done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
    except FileNotFoundError:
        raise StepFailed(name, f"no {args[0]}: apt-get install buildah debootstrap") from None
    except subprocess.TimeoutExpired as expired:
        raise StepFailed(name, f"no end within {timeout} s: {expired.output!r}") from None
    if done.returncode != 0:
        raise StepFailed(name, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def pinned_base() -> str:
    """The Dockerfile's default BASE_IMAGE: the pinned, digest-addressed Python image."""
    (base,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    return str(base)


def debian_release(base: str) -> str:
    """The Debian release a python:X-slim-RELEASE image is built on."""
    found = re.search(r"-slim-([a-z]+)@", base)
    assert found, f"no Debian release in {base}"
    return found[1]


@dataclass(frozen=True)
class Buildah:
    root: Path = CACHE

    def command(self) -> list[str]:
        storage = ["--root", str(self.root / "storage"), "--runroot", str(self.root / "run")]
        return ["buildah", *storage, "--storage-driver", "vfs"]

    def __call__(self, name: str, *args: str) -> str:
        return step(name, [*self.command(), *args]).strip()

    def has_image(self, image: str) -> bool:
        args = [*self.command(), "inspect", "--type", "image", image]
        return subprocess.run(args, capture_output=True, check=False).returncode == 0

    def config(self, image: str) -> dict[str, Any]:
        """The image's OCI configuration: Env, Entrypoint, User, WorkingDir, Labels."""
        inspected = json.loads(self("inspect", "inspect", "--type", "image", image))
        config: dict[str, Any] = inspected["OCIv1"]["config"]
        return config

    @contextmanager
    def mounted(self, image: str) -> Iterator[Path]:
        """A working container of `image`, its root file system mounted on the host."""
        container = self("container", "from", "--pull=never", image)
        try:
            yield Path(self("mount", "mount", container))
        finally:
            self("umount", "umount", container)
            self("rm", "rm", container)


def _mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mounts").read_text()
    points = [line.split()[1] for line in text.splitlines()]
    return [point for point in points if point.startswith(f"{path}/")]


def stand_in_base(buildah: Buildah, release: str) -> str:
    """A base image of Debian `release` with its Python, in buildah's storage."""
    image = f"localhost/nxcloud-connector-stand-in:{release}"
    if buildah.has_image(image):
        return image
    tarball = default_cache_dir() / "image" / f"stand-in-{release}.tar"
    if not tarball.exists():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=tarball.parent))
        try:
            rootfs = work / "rootfs"
            packages = "--include=python3,python3-venv,passwd,ca-certificates"
            step("debootstrap", ["debootstrap", "--variant=minbase", packages, release,
                                 str(rootfs), DEBIAN_MIRROR], timeout=1200)  # fmt: skip
            for cached in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (rootfs / cached).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            (rootfs / "usr/local/bin/python").symlink_to("/usr/bin/python3")
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
            (rootfs / "etc/pip.conf").write_text(
                "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
            )
            step("stand-in tarball", ["tar", "-C", str(rootfs), "-cf", f"{tarball}.new", "."])
            os.replace(f"{tarball}.new", tarball)
        finally:
            for point in reversed(_mounts_under(work)):  # what a failed debootstrap left
                subprocess.run(["umount", "--lazy", point], check=False)
            if not _mounts_under(work):
                shutil.rmtree(work)
    container = buildah("stand-in from scratch", "from", "scratch")
    buildah("stand-in add", "add", container, str(tarball), "/")
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    buildah("stand-in config", "config", "--env", f"PATH={path}", "--cmd", "python", container)
    buildah("stand-in commit", "commit", "--rm", container, image)
    return image


def build(buildah: Buildah, image: str, base: str, extras: str = "") -> None:
    """`make image` (with `extras`: `make image EXTRAS=...`) into buildah's storage, on
    `base`, which is already there. Layers are cached (`--layers`), so a second build with
    extras runs only the steps from the EXTRAS argument on."""
    storage = f"BUILDAH={' '.join(buildah.command())}"
    args = [
        "make",
        "image",
        f"IMAGE={image}",
        storage,
        f"BASE_IMAGE={base}",
        "BUILDAH_FLAGS=--pull=never --layers",
        *([f"EXTRAS={extras}"] if extras else []),
    ]
    step(f"build (make image{' EXTRAS=' + extras if extras else ''})", args, cwd=ROOT, timeout=1800)


def run_in(
    rootfs: Path,
    config: Mapping[str, Any],
    argv: Sequence[str],
    writable: Mapping[str, Path] | None = None,
    env: Mapping[str, str] | None = None,
    entrypoint: bool = True,
) -> list[str]:
    """The command that runs `argv` in the mounted image as Kubernetes would run it with a
    read-only root file system: as the image's user, in its working directory, with its
    environment (plus `env`), and only the paths in `writable` (each bind-mounted from a
    host directory) writable. It is the process itself, so a signal to it reaches it."""
    user = config.get("User") or "0"
    assert user == f"{UID}:{UID}", f"the image runs as {user!r}, not {UID}:{UID}"
    binds = "".join(
        f'mount --bind "{host}" "$r{inside}"; ' for inside, host in (writable or {}).items()
    )
    script = (
        'set -e; r="$1"; shift; mount --bind "$r" "$r"; mount -t proc proc "$r/proc"; '
        f'mount --rbind /dev "$r/dev"; {binds}mount -o remount,bind,ro "$r"; '
        f'exec chroot --userspec={UID}:{UID} --groups={UID} "$r" "$@"'
    )
    variables = [*config.get("Env", []), *(f"{k}={v}" for k, v in (env or {}).items())]
    command = [*(config.get("Entrypoint") or [] if entrypoint else []), *argv]
    workdir = config.get("WorkingDir") or "/"
    isolate = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"]
    return [*isolate, str(rootfs), "/usr/bin/env", "-i", f"--chdir={workdir}", *variables, *command]


def volume(tmp: Path, name: str) -> Path:
    """A host directory for a declared volume: empty, owned by the image's user (fsGroup)."""
    path = tmp / name
    path.mkdir(parents=True)
    os.chown(path, UID, UID)
    return path
