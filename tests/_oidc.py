"""A local OIDC-shaped key server: a real HTTP server on loopback serving the discovery document
(`/.well-known/openid-configuration`) and the key set (`/jwks`), whose keys a test rotates, and which it stops
to show an outage. It signs tokens with its keys, as an issuer would.

Shapes from OpenID Connect Discovery 1.0 (4.2: the document at `<issuer>/.well-known/openid-configuration`,
`issuer` and `jwks_uri` among its required members) and RFC 7517 5 (a JWK Set: `{"keys": [...]}`).
"""

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "model-service"
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class KeyServer:
    """Discovery and JWKS on 127.0.0.1; `issuer` is its base URL. Keys by kid; `published` are served."""

    def __init__(self) -> None:
        self.private: dict[str, SigningKey] = {}
        self.published: list[str] = []
        self.fetches = 0
        """How many times the JWKS was served."""
        self.extra_jwks: list[dict[str, Any]] = []
        """Raw JWKs served after the real ones (a test's hostile entries)."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: dict[str, Any]
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": server.issuer, "jwks_uri": f"{server.issuer}/jwks"}
                elif self.path == "/jwks":
                    server.fetches += 1
                    body = {"keys": [*(server.jwk(kid) for kid in server.published), *server.extra_jwks]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self._http.server_address[1]}"
        self.jwks_url = f"{self.issuer}/jwks"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    def add_key(self, kid: str, *, kind: str = "RSA", publish: bool = True) -> None:
        key: SigningKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "RSA"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.private[kid] = key
        if publish:
            self.published.append(kid)

    def rotate(self, kid: str) -> None:
        """A new signing key published; the old ones withdrawn (as an issuer's rotation ends)."""
        self.add_key(kid, publish=False)
        self.published = [kid]

    def jwk(self, kid: str) -> dict[str, Any]:
        key = self.private[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        public = jwt.get_algorithm_by_name(algorithm).to_jwk(key.public_key(), as_dict=True)
        return {**public, "kid": kid, "use": "sig", "alg": algorithm}

    def token(self, kid: str, **claims: Any) -> str:
        """A token signed with key `kid`: sub, aud, iss, exp (5 min) and the scopes given, unless overridden."""
        key = self.private[kid]
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        now = int(time.time())
        body = {
            "sub": "tenant-a",
            "aud": AUDIENCE,
            "iss": self.issuer,
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return jwt.encode(body, key, algorithm=algorithm, headers={"kid": kid})

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()


@pytest.fixture
def keys() -> Iterator[KeyServer]:
    """A key server publishing one RSA key, `k1`; stopped after the test."""
    server = KeyServer()
    server.add_key("k1")
    yield server
    server.stop()
