"""Auth: API keys (stored as sha256 digests, compared in constant time) and/or JWT bearer tokens, checked
against a static key (HS256 secret, RS256 PEM) or an issuer's JWKS (`JwksKeys`: fetched from a URL or through
OIDC discovery, cached, refetched once on an unknown `kid`, kept through an outage).

`Authenticator.authenticate` returns the caller's `Principal`: who it is (the rate limiter's client id) and
which scopes it holds; `Principal.require` refuses a route whose scope the token lacks (403).
"""

import asyncio
import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from model_service.operations.logs import JsonLog
from model_service.operations.settings import ServiceSettings, rsa_public_key
from model_service.protocol.errors import Forbidden, Unauthorized

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
LATEST_NUMERIC_DATE = 253_402_300_799
"""9999-12-31T23:59:59Z: a later `exp`, `nbf` or `iat` is no date an issuer meant."""
MAX_VERIFIED_TOKENS = 4096
"""Verified tokens remembered per worker (a few MiB at most); past it the memory starts afresh."""
MAX_JWKS_BYTES = 1_048_576
"""A JWKS (or discovery document) larger than this is refused: a key set is a few kilobytes."""
KEY_FAMILIES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
"""An asymmetric algorithm's prefix and the JWK `kty` it takes (RFC 7518 3.1; RFC 8037 for EdDSA)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who called: `client` is the rate limiter's id (`key:<first 12 hex of the key's sha256>`,
    `sub:<subject>`); `scopes` None means every scope (an API key is a whole-service credential)."""

    client: str
    scopes: frozenset[str] | None = None

    def require(self, scope: str | None) -> None:
        """Raise `Forbidden` unless the principal holds `scope` (None: the route needs no scope)."""
        if scope is None or self.scopes is None or scope in self.scopes:
            return
        held = " ".join(sorted(self.scopes)) or "none"
        raise Forbidden(f"this route needs scope {scope!r}; the token grants: {held}", _insufficient(scope))


def _insufficient(scope: str) -> dict[str, str]:
    # RFC 6750 3.1: insufficient_scope, with the scope the resource needs.
    return {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'}


class Authenticator:
    def __init__(
        self, settings: ServiceSettings, log: JsonLog, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._digests = tuple(digest.encode() for digest in settings.api_key_sha256)
        self._static_key: Any = None
        self._algorithm = ""
        if settings.jwt_hs256_secret is not None:
            self._static_key, self._algorithm = settings.jwt_hs256_secret.get_secret_value(), "HS256"
        elif settings.jwt_rs256_public_key_file is not None:
            self._static_key, self._algorithm = rsa_public_key(settings.jwt_rs256_public_key_file), "RS256"
        self.jwks = JwksKeys(settings, log) if settings.jwks_enabled else None
        self._jwt = self._static_key is not None or self.jwks is not None
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._max_lifetime_s = settings.jwt_max_lifetime_s
        self._scope_prefix = settings.jwt_scope_prefix
        self._clock = clock
        self._verified: dict[bytes, tuple[Principal, int, int]] = {}
        """Token -> (principal, exp, the key set's generation it was verified with)."""

    async def authenticate(self, authorization: bytes | None, api_key: bytes | None) -> Principal:
        """The caller, or `Unauthorized` (401, WWW-Authenticate) unless one credential is valid."""
        if api_key is not None:
            return self._key_principal(api_key, "invalid API key")
        if authorization is None:
            raise Unauthorized(
                "missing credentials: send Authorization: Bearer <token> or X-API-Key", _CHALLENGE
            )
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise Unauthorized("expected Authorization: Bearer <token>", _CHALLENGE)
        if self._jwt and token.count(b".") == 2:
            return await self._token_principal(token)
        return self._key_principal(token, "invalid bearer credential")

    def scope(self, route_scope: str | None) -> str | None:
        """The scope a token must hold for a route (the issuer's prefix, if any, before the route's)."""
        return None if route_scope is None else self._scope_prefix + route_scope

    def _key_principal(self, key: bytes, refusal: str) -> Principal:
        digest = hashlib.sha256(key).hexdigest().encode()
        matched = False
        for known in self._digests:  # no early exit: the time does not depend on which digest matched
            matched |= hmac.compare_digest(digest, known)
        if not matched:
            raise Unauthorized(refusal, _CHALLENGE)
        return Principal(f"key:{digest[:12].decode()}")

    async def _token_principal(self, token: bytes) -> Principal:
        """The token's principal: from the tokens verified before (a client sends the same token until it
        expires, and verifying an RS256 signature costs far more than the rest of the request), else
        verified and remembered until its `exp`, as long as the key set that verified it is unchanged."""
        generation = self.jwks.generation if self.jwks is not None else 0
        known = self._verified.get(token)
        if known is not None:
            principal, expires, verified_with = known
            if self._clock() < expires and verified_with == generation:  # PyJWT: expired once exp <= now
                return principal
            del self._verified[token]
        principal, expires = await self._verify(token)
        if len(self._verified) >= MAX_VERIFIED_TOKENS:
            self._verified.clear()  # bounded; the tokens in use are verified again once
        self._verified[token] = (principal, expires, generation)
        return principal

    async def _verify(self, token: bytes) -> tuple[Principal, int]:
        try:
            key: Any = self._static_key
            algorithms = [self._algorithm]
            if self.jwks is not None:
                key = await self.jwks.key_for(jwt.get_unverified_header(token))
                algorithms = [key.algorithm_name]
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                # The dates are checked below, on this class' clock (the verified tokens' memory uses it too).
                options={
                    "require": ["exp", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}", _CHALLENGE) from None
        self._check_dates(claims)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("invalid token: sub must be a non-empty string", _CHALLENGE)
        return Principal(f"sub:{subject}", token_scopes(claims)), claims["exp"]

    def _check_dates(self, claims: dict[str, Any]) -> None:
        """PyJWT reads `exp`, `nbf` and `iat` through int(): "1999999999", 1.9e9 and 10**30 all pass it.
        RFC 7519 2 makes them JSON numbers; issuers send integers. Only an integer in range is taken; the
        token must be current (`exp` ahead, `nbf` and `iat` not, as PyJWT checks them, without leeway), and
        its `exp` no further ahead than MODEL_SERVICE_JWT_MAX_LIFETIME_S: a token that never expires is a
        leaked credential forever."""
        for claim in ("exp", "nbf", "iat"):
            if claim not in claims:
                continue
            value = claims[claim]
            if type(value) is not int or not 0 <= value <= LATEST_NUMERIC_DATE:
                shown = repr(value) if len(repr(value)) <= 24 else f"{repr(value)[:24]}..."
                raise Unauthorized(
                    f"invalid token: {claim} must be an integer NumericDate (seconds since 1970), got {shown}",
                    _CHALLENGE,
                )
        now = self._clock()
        if claims["exp"] <= now:
            raise Unauthorized("invalid token: expired (exp is past)", _CHALLENGE)
        if claims.get("nbf", 0) > now or claims.get("iat", 0) > now:
            raise Unauthorized("invalid token: not valid yet (nbf or iat is in the future)", _CHALLENGE)
        ahead = claims["exp"] - now
        if ahead > self._max_lifetime_s:
            raise Unauthorized(
                f"invalid token: exp is {ahead:.0f} s ahead; tokens may live at most "
                f"{self._max_lifetime_s} s (MODEL_SERVICE_JWT_MAX_LIFETIME_S)",
                _CHALLENGE,
            )


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """The scopes a token grants: `scope`, space-separated (RFC 8693 4.2, RFC 9068 2.2.3), or `scp`, a list
    (Okta) or space-separated (Entra ID)."""
    granted: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(item for item in value if isinstance(item, str))
    return frozenset(granted)


class JwksKeys:
    """An issuer's signing keys (JWKS, RFC 7517 5), fetched from MODEL_SERVICE_JWT_JWKS_URL or the
    `jwks_uri` of the issuer's OIDC discovery document, and kept per worker.

    - Cached for `jwt_keys_ttl_s`; after it the set is refreshed in the background while cached keys go on
      verifying.
    - A token naming an unknown `kid` (the issuer rotated) waits for one refetch, at most one per
      `jwt_keys_min_refetch_s` (a flood of made-up kids cannot turn into a flood of fetches); concurrent
      requests share the fetch.
    - A failed fetch (outage, bad answer) keeps the keys held: tokens they signed still pass; it is logged
      (`jwks_refresh_failed`). A successful fetch replaces the set, so a key the issuer withdrew stops
      verifying.
    - Only asymmetric keys of the allowed algorithms are taken: no `oct` (HS*) key, no `none`.
    """

    def __init__(
        self, settings: ServiceSettings, log: JsonLog, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._jwks_url = settings.jwt_jwks_url
        self._issuer = settings.jwt_issuer
        self._algorithms = frozenset(settings.jwt_algorithms)
        self._ttl_s = settings.jwt_keys_ttl_s
        self._min_refetch_s = settings.jwt_keys_min_refetch_s
        self._timeout_s = settings.jwt_keys_timeout_s
        self._log = log
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}
        """kid -> its JWK, as fetched."""
        self._parsed: dict[tuple[str, str], jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._fetch: asyncio.Task[None] | None = None
        self.generation = 0
        """Counts the changes of the key set (a withdrawn key must stop verifying the tokens it signed)."""

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    async def key_for(self, header: dict[str, Any]) -> jwt.PyJWK:
        """The key that verifies a token with this header; `InvalidTokenError` when there is none."""
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            allowed = ", ".join(sorted(self._algorithms))
            raise jwt.InvalidAlgorithmError(
                f"alg {algorithm!r} is not allowed (MODEL_SERVICE_JWT_ALGORITHMS: {allowed})"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise jwt.InvalidTokenError("kid must be a string")
        now = self._clock()
        may_fetch = self._attempted_at is None or now - self._attempted_at >= self._min_refetch_s
        if not self._has(kid):
            if may_fetch:
                self._start_fetch(now)
            if self._fetch is not None:
                await asyncio.shield(self._fetch)
        elif may_fetch and self._fetched_at is not None and now - self._fetched_at > self._ttl_s:
            self._start_fetch(now)  # stale: refreshed behind this request, which the cached key verifies
        jwk = self._jwk(kid)
        if jwk is None:
            reason = "no signing keys could be fetched yet" if not self._keys else f"unknown key id {kid!r}"
            raise jwt.InvalidTokenError(reason)
        return self._parse(kid or "", jwk, algorithm)

    async def refresh(self) -> None:
        """Fetch the key set now (start-up); a failure is logged and keeps what is held."""
        self._start_fetch(self._clock())
        if self._fetch is not None:
            await asyncio.shield(self._fetch)

    def _has(self, kid: str | None) -> bool:
        return self._jwk(kid) is not None

    def _jwk(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:  # a token without kid is taken only when the set has one key (RFC 7515 4.1.4)
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _parse(self, kid: str, jwk: dict[str, Any], algorithm: str) -> jwt.PyJWK:
        parsed = self._parsed.get((kid, algorithm))
        if parsed is None:
            if jwk.get("alg", algorithm) != algorithm:
                raise jwt.InvalidAlgorithmError(
                    f"key {kid!r} is for {jwk['alg']}, the token says {algorithm}"
                )
            if KEY_FAMILIES.get(algorithm[:2]) != jwk.get("kty"):
                raise jwt.InvalidAlgorithmError(f"key {kid!r} ({jwk.get('kty')}) cannot verify {algorithm}")
            try:
                parsed = jwt.PyJWK(jwk, algorithm)
            except jwt.PyJWKError as exc:
                raise jwt.InvalidKeyError(f"key {kid!r}: {exc}") from None
            self._parsed[(kid, algorithm)] = parsed
        return parsed

    def _start_fetch(self, now: float) -> None:
        if self._fetch is None or self._fetch.done():
            self._attempted_at = now
            self._fetch = asyncio.get_running_loop().create_task(self._fetch_keys())

    async def _fetch_keys(self) -> None:
        try:
            keys = await asyncio.to_thread(self._download)
        except (OSError, ValueError) as exc:  # urllib's errors are OSErrors; a bad document a ValueError
            self._log.event(
                "WARNING",
                "jwks_refresh_failed",
                error=f"{type(exc).__name__}: {exc}",
                keys_held=len(self._keys),
                message="tokens signed by the keys held still pass; retried after MODEL_SERVICE_JWT_KEYS_MIN_REFETCH_S",
            )
            return
        if keys != self._keys:
            self._log.event("INFO", "jwks_refreshed", kids=sorted(keys))
            self.generation += 1  # tokens verified with the old set are verified again
        self._keys = keys
        self._parsed = {}
        self._fetched_at = self._clock()

    def _download(self) -> dict[str, dict[str, Any]]:
        """Blocking (run in a thread): discovery if needed, then the key set, as kid -> JWK."""
        url = self._jwks_url
        if url is None:
            assert self._issuer is not None, "settings: discovery needs MODEL_SERVICE_JWT_ISSUER"
            discovery = _get_json(
                f"{self._issuer.rstrip('/')}/.well-known/openid-configuration", self._timeout_s
            )
            # OpenID Connect Discovery 1.0, 4.3: the document's issuer must be the issuer asked about.
            if discovery.get("issuer") != self._issuer:
                raise ValueError(
                    f"discovery document names issuer {discovery.get('issuer')!r}, expected {self._issuer!r}"
                )
            url = discovery.get("jwks_uri")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise ValueError(f"discovery document has no usable jwks_uri: {url!r}")
        document = _get_json(url, self._timeout_s)
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise ValueError(f"{url}: expected a JWKS, an object with a 'keys' list")  # noqa: TRY004 - caught as a bad document
        keys: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue
            if entry.get("kty") not in KEY_FAMILIES.values():  # no `oct`: a shared secret is never public
                continue
            if "alg" in entry and entry["alg"] not in self._algorithms:
                continue
            keys[str(entry.get("kid", ""))] = entry
        if not keys:
            raise ValueError(
                f"{url}: no signing key of an allowed algorithm ({', '.join(sorted(self._algorithms))})"
            )
        return keys


def _get_json(url: str, timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"{url}: answer larger than {MAX_JWKS_BYTES} bytes")
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError(f"{url}: expected a JSON object")  # noqa: TRY004 - caught as a bad document
    return document
