"""TLS at the receiver's push port: a server context from a PEM certificate chain and key,
rebuilt for new connections when the files change on disk (cert-manager renewing them).

TLS 1.2 at least; ECDHE with AES-GCM or ChaCha20-Poly1305 on TLS 1.2, OpenSSL's TLS 1.3
suites. A connection keeps the context it was accepted with, so a renewal drops nothing.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Final

from connector.errors import ConfigError
from connector.login import Stamp, stamp

log = logging.getLogger(__name__)

CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
CERT_VARIABLE: Final = "NXCLOUD_RECEIVER_TLS_CERT_FILE"
KEY_VARIABLE: Final = "NXCLOUD_RECEIVER_TLS_KEY_FILE"


def _no_password() -> bytes:
    return b""  # an encrypted key is refused, never prompted for


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The push port's context; ConfigError naming the variable when the files do not hold
    a certificate chain and its key."""
    for variable, path in ((CERT_VARIABLE, cert_file), (KEY_VARIABLE, key_file)):
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{variable}: cannot read {path} ({exc.strerror})") from None
        if variable == CERT_VARIABLE and b"-----BEGIN CERTIFICATE-----" not in text:
            raise ConfigError(f"{variable}: {path} holds no PEM certificate")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"{KEY_VARIABLE}: {key_file} does not match the certificate in {CERT_VARIABLE}"
            ) from None
        raise ConfigError(
            f"{CERT_VARIABLE}, {KEY_VARIABLE}: not a usable PEM certificate chain and key"
            f" ({exc.reason or exc.library})"
        ) from None
    return context


class Certificate:
    """The current context for new connections; `current()` looks at the files first."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._seen = self._stamps()
        self._context = server_context(cert_file, key_file)

    def _stamps(self) -> tuple[Stamp, ...]:
        return (stamp(self.cert_file), stamp(self.key_file))

    def current(self) -> ssl.SSLContext:
        stamps = self._stamps()
        if stamps != self._seen:
            self._seen = stamps
            try:
                self._context = server_context(self.cert_file, self.key_file)
            except ConfigError as exc:
                log.warning("receiver certificate not reloaded, keeping the one in use",
                            extra={"reason": str(exc)})  # fmt: skip
            else:
                log.info("receiver certificate reloaded", extra={"file": str(self.cert_file)})
        return self._context
