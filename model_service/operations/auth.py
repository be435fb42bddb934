"""Optional auth: API keys (stored as sha256 digests, compared in constant time) and/or JWT bearer tokens."""

import hashlib
import hmac
from typing import Any

import jwt

from model_service.operations.settings import ServiceSettings, rsa_public_key
from model_service.protocol.errors import Unauthorized

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Authenticator:
    def __init__(self, settings: ServiceSettings) -> None:
        self._digests = tuple(digest.encode() for digest in settings.api_key_sha256)
        self._jwt_key: Any = None
        self._algorithm = ""
        if settings.jwt_hs256_secret is not None:
            self._jwt_key, self._algorithm = settings.jwt_hs256_secret.get_secret_value(), "HS256"
        elif settings.jwt_rs256_public_key_file is not None:
            self._jwt_key, self._algorithm = rsa_public_key(settings.jwt_rs256_public_key_file), "RS256"
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer

    def check(self, authorization: bytes | None, api_key: bytes | None) -> None:
        """Raise `Unauthorized` unless one credential is valid."""
        if api_key is not None:
            if self._key_ok(api_key):
                return
            raise Unauthorized("invalid API key", _CHALLENGE)
        if authorization is None:
            raise Unauthorized(
                "missing credentials: send Authorization: Bearer <token> or X-API-Key", _CHALLENGE
            )
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise Unauthorized("expected Authorization: Bearer <token>", _CHALLENGE)
        if self._jwt_key is not None and token.count(b".") == 2:
            self._jwt_ok(token)
            return
        if self._key_ok(token):
            return
        raise Unauthorized("invalid bearer credential", _CHALLENGE)

    def _key_ok(self, key: bytes) -> bool:
        digest = hashlib.sha256(key).hexdigest().encode()
        matched = False
        for known in self._digests:  # no early exit: the time does not depend on which digest matched
            matched |= hmac.compare_digest(digest, known)
        return matched

    def _jwt_ok(self, token: bytes) -> None:
        try:
            jwt.decode(
                token,
                self._jwt_key,
                algorithms=[self._algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp"]},
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}", _CHALLENGE) from None
