"""A small OIDC provider the tests serve: a JWKS and a client-credentials token endpoint
issuing RS256-signed JWTs, on a free loopback port, in a thread (the broker fetches the
JWKS while the test's event loop may be blocked)."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KID = "test-key-1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _number(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass
class Client:
    secret: str
    sub: str
    lifetime: int = 60  # seconds
    audience: str | None = None  # another than the issuer's: tokens the brokers refuse
    issuer: str | None = None  # another than the one the brokers expect: refused too
    behind: int = 0  # seconds the issuer's clock is behind: `exp` already past if > lifetime


@dataclass
class Issuer:
    clients: dict[str, Client]
    audience: str = "kafka"
    issued: list[str] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/jwks":
                    self._answer(200, issuer.jwks())
                else:
                    self._answer(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                status, body = issuer.token_answer(self.headers.get("authorization", ""))
                self._answer(status, body)

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Issuer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def jwks(self) -> dict[str, Any]:
        public = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
                          "n": _number(public.n), "e": _number(public.e)}]}  # fmt: skip

    def token_answer(self, authorization: str) -> tuple[int, dict[str, Any]]:
        self.requests += 1
        try:
            scheme, encoded = authorization.split(" ", 1)
            client_id, secret = base64.b64decode(encoded).decode().split(":", 1)
        except ValueError:
            return 401, {"error": "invalid_client"}
        client = self.clients.get(client_id)
        if scheme != "Basic" or client is None or client.secret != secret:
            return 401, {"error": "invalid_client"}
        token = self.sign(client.sub, client.lifetime, client.audience or self.audience,
                          issuer=client.issuer, behind=client.behind)  # fmt: skip
        self.issued.append(token)
        return 200, {"access_token": token, "token_type": "Bearer",
                     "expires_in": client.lifetime}  # fmt: skip

    def sign(
        self, sub: str, lifetime: int, audience: str, issuer: str | None = None, behind: int = 0
    ) -> str:
        now = int(time.time()) - behind
        header = {"alg": "RS256", "typ": "JWT", "kid": KID}
        claims = {"iss": issuer or self.url, "sub": sub, "aud": audience, "iat": now - 5,
                  "exp": now + lifetime, "scope": "kafka"}  # fmt: skip
        signing_input = ".".join(
            b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"
