"""Clients of the receiver's ports as they really behave, for the edge benchmark and tests.

Storms of connections that end every way a connection can (a reset right away or after a
pause, a reset in the middle of a TLS handshake or after it, a plain close), and real TLS
clients that send their ClientHello at once: Python's `ssl`, curl and `openssl s_client`
(both as subprocesses). All on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

RESET: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
HOST: Final = "127.0.0.1"
DR_PATH: Final = "/nxcloud/voice/dr"
EXAMPLE: Final = (
    "phone=8615088888888&countryCode=86&duration=10&voice_type=0"
    "&messageid={messageid}&basic_price=0.005&second=10&cycle=60&size=1"
    "&customer_price=0.036&start_time=2020-12-01 00:00:00&end_time=2020-12-01 00:00:10"
    "&result=Successful connection&hangup_cause=NORMAL_CLEARING&hangup_disposition=send_bye"
    "&ivr_result="
)
PATIENCE: Final = 30  # seconds a real client waits for its answer
Ending = Callable[[socket.socket], Awaitable[None]]


def example(messageid: str) -> str:
    """The provider's example push as printed (raw spaces), with its own messageid."""
    return EXAMPLE.format(messageid=messageid)


def request(messageid: str, token: str = "") -> bytes:
    """A GET of the example as printed, asking the server to close after answering."""
    path = f"{DR_PATH}/{token}" if token else DR_PATH
    return (
        f"GET {path}?{example(messageid)} HTTP/1.1\r\nHost: push\r\nConnection: close\r\n\r\n"
    ).encode()


def client_hello(context: ssl.SSLContext | None = None) -> bytes:
    """The bytes of a real TLS 1.2/1.3 ClientHello, as Python's ssl sends it."""
    context = context or ssl.create_default_context()
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=HOST)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def _connect(port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    sock.close()


def reset_after(seconds: float) -> Ending:
    async def end(sock: socket.socket) -> None:
        if seconds:
            await asyncio.sleep(seconds)
        reset(sock)

    return end


def close_after(seconds: float) -> Ending:
    async def end(sock: socket.socket) -> None:
        if seconds:
            await asyncio.sleep(seconds)
        sock.close()

    return end


def reset_in_handshake(hello: bytes) -> Ending:
    """Send a ClientHello, wait for the server's first answer (or 1 s), then reset: the server
    is in the middle of its handshake."""

    async def end(sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, TimeoutError):
            await loop.sock_sendall(sock, hello)
            async with asyncio.timeout(1):
                await loop.sock_recv(sock, 65536)
        reset(sock)

    return end


async def reset_after_handshake(port: int, context: ssl.SSLContext) -> bool:
    """A full handshake, then a reset instead of a request; False when it did not connect."""
    try:
        async with asyncio.timeout(30):
            _, writer = await asyncio.open_connection(HOST, port, ssl=context)
    except (OSError, TimeoutError):
        return False
    raw = writer.get_extra_info("socket")
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    writer.transport.abort()
    return True


async def storm(port: int, count: int, end: Ending, concurrency: int = 200) -> int:
    """`count` connections, `concurrency` at a time, each ended by `end`; how many could not
    even connect."""
    failed = 0
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failed
        async with slots:
            try:
                sock = await _connect(port)
            except OSError:
                failed += 1
                return
            try:
                await end(sock)
            finally:
                sock.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return failed


async def handshake_storm(
    port: int, count: int, context: ssl.SSLContext, concurrency: int = 200
) -> int:
    """`count` full handshakes each ended by a reset; how many did not connect."""
    slots = asyncio.Semaphore(concurrency)

    async def one() -> bool:
        async with slots:
            return await reset_after_handshake(port, context)

    done = await asyncio.gather(*(one() for _ in range(count)))
    return done.count(False)


def _read_reply(read: Callable[[int], bytes]) -> bytes:
    reply = b""
    while True:
        try:
            chunk = read(65536)
        except (ssl.SSLError, OSError):
            break  # a close without close_notify, or a reset: what came is the reply
        if not chunk:
            break
        reply += chunk
    return reply


def ssl_push(port: int, cafile: Path, raw: bytes, timeout: float = PATIENCE) -> bytes:
    """Python's ssl as HTTP libraries use it: connect, ClientHello at once, the request, the
    reply until the server closes. b"" when the handshake failed."""
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with (
            socket.create_connection((HOST, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=HOST) as tls,
        ):
            tls.sendall(raw)
            return _read_reply(tls.recv)
    except (ssl.SSLError, OSError):
        return b""


async def curl_push(port: int, cafile: Path, messageid: str) -> bytes:
    """curl (spaces %-encoded: curl refuses them raw); its output, the answer's body."""
    query = example(messageid).replace(" ", "%20")
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", str(PATIENCE), "--cacert", str(cafile),
        f"https://{HOST}:{port}{DR_PATH}?{query}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    output, _ = await process.communicate()
    return output


async def openssl_push(port: int, cafile: Path, raw: bytes) -> bytes:
    """`openssl s_client`, the request (raw spaces and all) on its stdin; its output."""
    process = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(cafile),
        "-verify_return_error", "-quiet",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(PATIENCE):
            output, _ = await process.communicate(raw)
    except TimeoutError:
        process.kill()
        await process.wait()
        return b""
    return output


CLIENTS: Final = ("python-ssl", "curl", "openssl")


def answered(output: bytes) -> str:
    """What a client got: `success`, `error`, or `lost` (no HTTP answer at all)."""
    if output.endswith(b"success"):
        return "success"
    return "error" if output.endswith(b"error") else "lost"


async def real_clients(
    port: int,
    cafile: Path,
    counts: dict[str, int],
    concurrency: int = 200,
    *,
    prefix: str = "real",
    token: str = "",
) -> dict[str, collections.Counter[str]]:
    """`counts[client]` pushes from each client, all interleaved, `concurrency` at a time;
    by client, how many were answered `success`, `error` or not at all (`lost`)."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    outcomes: dict[str, collections.Counter[str]] = {name: collections.Counter() for name in counts}
    numbers = {name: itertools.count() for name in counts}
    with ThreadPoolExecutor(max_workers=min(concurrency, 64)) as threads:

        async def one(client: str) -> None:
            messageid = f"{prefix}-{client}-{next(numbers[client])}"
            raw = request(messageid, token)
            async with slots:
                if client == "python-ssl":
                    output = await loop.run_in_executor(threads, ssl_push, port, cafile, raw)
                elif client == "curl":
                    output = await curl_push(port, cafile, messageid)
                else:
                    output = await openssl_push(port, cafile, raw)
            outcomes[client][answered(output)] += 1

        await asyncio.gather(*(one(client) for client in _interleaved(counts)))
    return outcomes


def _interleaved(counts: dict[str, int]) -> Iterable[str]:
    left = dict(counts)
    while any(left.values()):
        for client in list(left):
            if left[client]:
                left[client] -= 1
                yield client
