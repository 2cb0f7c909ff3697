"""A tiny real OIDC issuer for the tests: discovery document and JWKS over HTTP, tokens signed with its key."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "mlaas4hep-test"


def new_key(kind: str = "RSA") -> Any:
    if kind == "EC":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Issuer:
    """Serves ``/.well-known/openid-configuration`` and ``/jwks.json``; signs tokens."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.url = ""
        self.jwks_requests = 0
        self.rotate()

    def rotate(self, kind: str = "RSA") -> str:
        """A new signing key (the only one published); return its kid."""
        kid = uuid.uuid4().hex[:8]
        self.keys = {kid: new_key(kind)}
        self.kid = kid
        return kid

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            algo = (
                jwt.algorithms.ECAlgorithm
                if isinstance(key, ec.EllipticCurvePrivateKey)
                else jwt.algorithms.RSAAlgorithm
            )
            jwk = json.loads(algo.to_jwk(key.public_key()))
            out.append(
                jwk
                | {
                    "kid": kid,
                    "use": "sig",
                    "alg": "ES256" if algo is jwt.algorithms.ECAlgorithm else "RS256",
                }
            )
        return {"keys": out}

    def token(
        self,
        sub: str = "alice",
        scope: str = "mlaas.submit mlaas.read",
        groups: list[str] | None = None,
        *,
        aud: str = AUDIENCE,
        iss: str | None = None,
        lifetime: float = 300,
        nbf: float | None = None,
        key: Any = None,
        kid: str | None = None,
        algorithm: str | None = None,
        drop: tuple[str, ...] = (),
    ) -> str:
        now = time.time()
        claims: dict[str, Any] = {
            "sub": sub, "iss": iss or self.url, "aud": aud, "iat": int(now), "exp": int(now + lifetime),
            "scope": scope, "email": f"{sub}@example.org",
        }  # fmt: skip
        if groups is not None:
            claims["groups"] = groups
        if nbf is not None:
            claims["nbf"] = int(now + nbf)
        for name in drop:
            claims.pop(name, None)
        signing = key if key is not None else self.keys[self.kid]
        if algorithm is None:
            algorithm = "ES256" if isinstance(signing, ec.EllipticCurvePrivateKey) else "RS256"
        return jwt.encode(claims, signing, algorithm=algorithm, headers={"kid": kid or self.kid})


@contextlib.contextmanager
def oidc_issuer() -> Iterator[Issuer]:
    issuer = Issuer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                body = {
                    "issuer": issuer.url,
                    "jwks_uri": f"{issuer.url}/jwks.json",
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                }
            elif self.path == "/jwks.json":
                issuer.jwks_requests += 1
                body = issuer.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
