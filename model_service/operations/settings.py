"""Service settings: typed, validated, one env prefix (`MODEL_SERVICE_`), each field documented under it.

Over 400 lines on purpose: every setting of the service is one field of one class, with its documentation and
its checks beside it, so a setting is read, validated and documented in one place."""

import difflib
import ipaddress
import math
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from model_service.contract.signature import decode_key

ENV_PREFIX = "MODEL_SERVICE_"
MIN_HS256_SECRET_BYTES = 32
"""RFC 7518 3.2: an HS256 key must be at least as long as the hash output (256 bits)."""
ASYMMETRIC_ALGORITHMS = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)
"""JWS algorithms (RFC 7518 3.1, RFC 8037) a key set may verify: those whose verifying key is public."""


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid", frozen=True
    )

    model_dir: Path
    """Folder holding `model.json` (the card) and the ONNX file it names, e.g. artifacts/<model>/<version>."""
    expected_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """sha256 of the ONNX file as the registry recorded it at register (the version's `onnx_sha256` tag);
    the pipeline renders it from the release it deploys. When set, the start-up check compares the file
    with it as well as with the card, and refuses to start on a difference."""
    signatures: Literal["required", "optional", "off"] = "off"
    """Model signature check at start (`signature.json` beside the card): `required` refuses an unsigned
    model, one signed by an untrusted key and a file changed after signing; `optional` checks a signature
    when there is one; `off` reads none (docs/service.md, Model signatures)."""
    signing_public_keys: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated Ed25519 public keys (32 bytes, base64) whose signatures are trusted."""
    host: str = "127.0.0.1"
    """Interface to bind; use 0.0.0.0 in a container."""
    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port of the API (inference, model metadata, probes, docs); it never serves /metrics."""
    metrics_port: int = Field(default=9000, ge=1, le=65535)
    """TCP port of `GET /metrics` (Prometheus text format), on the same interface as the API. A separate,
    low-priority process serves it for every worker, so a flood of scrapes cannot slow predictions and a
    route to the API (Ingress, HTTPRoute) never exposes it; admit only the monitoring system to it."""
    workers: int = Field(default=1, ge=1, le=64)
    """uvicorn worker processes; each loads its own onnxruntime session. One /metrics covers them all."""
    environment: str = Field(default="dev", pattern=r"^[a-z0-9][a-z0-9-]*$")
    """Name of the environment this serves (any environment file's name); `prod` refuses fault injection."""

    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    """Event loop of each worker. uvloop serves about a third more requests per second, but under a
    sustained CPU overload it left new connections unserved until the overload ended (a probe on a new
    connection: 7.4 s with uvloop, 0.8 s with asyncio; docs/service.md, Overload), and kubelet opens a
    new connection for every probe. With asyncio and several workers, each worker listens on a socket of
    its own (model_service/server/event_loop.py)."""

    intra_op_threads: int = Field(default=1, ge=0)
    """onnxruntime intra-op threads per worker (0 = one per core). Keep 1 when workers fill the cores."""
    inter_op_threads: int = Field(default=1, ge=0)
    """onnxruntime inter-op threads per worker (0 = onnxruntime's default)."""

    max_rows: int = Field(default=1000, ge=1)
    """Most rows accepted in one request; more is a 422."""
    max_body_bytes: int = Field(default=1_048_576, ge=64)
    """Largest request body in bytes, checked on Content-Length and while streaming; more is a 413."""
    max_in_flight: int = Field(default=64, ge=1)
    """Requests handled at once per worker; past it the service sheds load with 503 and Retry-After."""
    max_queue_delay_ms: float = Field(default=100.0, gt=0.0, le=60_000.0)
    """Longest a request may wait between its head being parsed and its handler starting; past it the
    service sheds it with 503 and Retry-After. This is what grows when the CPU is the bottleneck: the
    handlers run one after another on the event loop, so the in-flight count stays low while requests
    queue for the loop."""
    retry_after_s: int = Field(default=1, ge=0)
    """Value of the Retry-After header on 503 responses, in seconds."""

    max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    """Largest request head (request line and headers) in bytes; more is a 431 and the connection closes."""
    max_headers: int = Field(default=100, ge=8, le=10_000)
    """Most header fields in one request; more is a 431."""
    header_timeout_s: float = Field(default=10.0, gt=0.0, le=300.0)
    """Longest wait from a request's first byte (or a new connection) to its last header; then a 408
    (or, before any byte, a close): slow or stalled clients cannot hold connections."""
    body_timeout_s: float = Field(default=5.0, gt=0.0, le=300.0)
    """Longest wait from the end of the headers to the end of the body; then a 408 and a close."""
    max_pipelined: int = Field(default=16, ge=1, le=10_000)
    """Most requests waiting on one connection behind the one being answered (HTTP/1.1 pipelining); past
    it the service stops reading that connection until answers drain, so one connection's memory stays
    bounded."""
    max_connections: int = Field(default=0, ge=0)
    """Most open connections per worker; past it a new connection closes the one idle the longest (or,
    with none idle, is closed at once). 0: the descriptor limit (RLIMIT_NOFILE) less a reserve of 256."""
    keep_alive_timeout_s: int = Field(default=5, ge=1, le=300)
    """Seconds an idle keep-alive connection stays open after a response (uvicorn `timeout_keep_alive`).
    Keep it longer than the idle timeout of a proxy in front, so the proxy closes first and never sends a
    request on a connection the service is closing."""

    api_key_sha256: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated sha256 hex digests of accepted API keys (`printf %s KEY | sha256sum`).
    Keys are sent as `Authorization: Bearer KEY` or `X-API-Key: KEY`. Empty with no JWT setting: auth off."""
    jwt_hs256_secret: SecretStr | None = None
    """Shared secret for HS256 JWT bearer tokens, at least 32 bytes (e.g. `openssl rand -hex 32`)."""
    jwt_rs256_public_key_file: Path | None = None
    """PEM file with the RSA public key for RS256 JWT bearer tokens; read and parsed at start."""
    jwt_audience: str | None = None
    """Required `aud` claim of JWTs, when set."""
    jwt_issuer: str | None = None
    """Required `iss` claim of JWTs, when set; with MODEL_SERVICE_JWT_OIDC_DISCOVERY, where the keys are found."""
    jwt_jwks_url: str | None = None
    """URL of the issuer's JSON Web Key Set (https; http only on loopback): tokens are verified with the key
    their `kid` names, the set cached per worker (docs/service.md, Auth)."""
    jwt_oidc_discovery: bool = False
    """Find the JWKS through OpenID Connect discovery: `jwks_uri` of `<issuer>/.well-known/openid-configuration`
    (needs MODEL_SERVICE_JWT_ISSUER; instead of MODEL_SERVICE_JWT_JWKS_URL)."""
    jwt_algorithms: Annotated[tuple[str, ...], NoDecode] = ("RS256",)
    """Comma-separated signature algorithms accepted from the JWKS; asymmetric only (RS*, PS*, ES*, EdDSA): a
    shared-secret algorithm with a published key would let anyone sign, and `none` signs nothing."""
    jwt_keys_ttl_s: float = Field(default=300.0, gt=0.0, le=86_400.0)
    """Seconds the fetched key set is used before it is refreshed (in the background: cached keys keep
    verifying meanwhile, and through an outage of the issuer)."""
    jwt_keys_min_refetch_s: float = Field(default=30.0, ge=0.0, le=3600.0)
    """Fewest seconds between two fetches of the key set: a token with an unknown `kid` (a rotation) waits for
    one refetch, and made-up kids cannot turn into a flood of fetches."""
    jwt_keys_timeout_s: float = Field(default=5.0, gt=0.0, le=60.0)
    """Timeout of one fetch of the discovery document or the key set."""
    jwt_max_lifetime_s: int = Field(default=86_400, ge=60, le=31_536_000)
    """A token whose `exp` lies further ahead than this is refused: one that never expires is a leaked
    credential forever."""
    jwt_scope_prefix: str = Field(default="", pattern=r"^[!#-\[\]-~]*$")
    """Put before each route's scope (`predict`, `model:read`, `feedback`) when checking a token's `scope`/`scp`
    claim, for issuers that qualify scopes (e.g. `api://model-service/`)."""

    rate_limit_rps: float = Field(default=0.0, ge=0.0, le=1_000_000.0)
    """Requests per second each client may send (token bucket per client, per worker); 0: no limit. The
    client is the API key (its digest's first 12 hex), the token's `sub`, or with auth off the remote
    address. Past it: 429 with Retry-After. Probes are never limited."""
    rate_limit_burst: int = Field(default=0, ge=0, le=1_000_000)
    """Requests a client may send at once above the rate (the bucket's size); 0: the rate rounded up."""
    rate_limit_clients: dict[str, tuple[float, int]] = Field(default_factory=dict)
    """Per-client limits, JSON: `{"sub:batch-job": [200, 400], "key:3f2a9c1d0b7e": [5, 10]}` (rate, burst)."""
    rate_limit_max_clients: int = Field(default=10_000, ge=1, le=10_000_000)
    """Most clients tracked per worker; past it a full (idle) bucket, else the oldest, is forgotten."""

    fault_latency_ms: float = Field(default=0.0, ge=0.0, le=60_000.0)
    """Rehearsals only: extra latency added to non-probe requests (a share of them, see
    `fault_latency_ratio`), in milliseconds."""
    fault_latency_ratio: float = Field(default=1.0, gt=0.0, le=1.0)
    """Rehearsals only: share of non-probe requests delayed by `fault_latency_ms` (1: every request; 0.08 with
    3 ms: tail noise, the shape of a busy machine rather than of a regression)."""
    fault_error_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    """Rehearsals only: fraction of non-probe requests answered with a 500 `injected_fault`."""
    fault_invert_scores: bool = False
    """Rehearsals only: answer with the classes' probabilities reversed (binary: p -> 1 - p), so the model
    predicts differently while staying healthy by HTTP; the canary's prediction-shift check must catch it."""

    drift_window: int = Field(default=1000, ge=10, le=10_000_000)
    """Rows (per worker) behind the `model_service_feature_psi` and `model_service_score_psi` gauges."""
    log_inputs: bool = False
    """Opt-in: log a sample of the input rows (event `input`) for later analysis."""
    log_inputs_sample_ratio: float = Field(default=0.01, gt=0.0, le=1.0)
    """Share of rows logged when `log_inputs` is on."""
    log_inputs_sensitive: str = ""
    """Features never shown in clear, comma-separated: `FIELD:hash` (sha256, 16 hex) or `FIELD:drop`. It
    applies to the input log and, whether that is on or not, to the feature's `model_service_feature_bin`
    series on the metrics port (`hash`: the bin label hashed; `drop`: no series)."""

    capture_dir: Path | None = None
    """Folder of the capture (docs/monitoring.md): a sample of the answers served, as JSON lines, one file per
    worker at a time, with `labels.sqlite` (the id index and the labels `POST /v1/feedback` stores) and the
    live-quality gauges the metrics port appends. Unset: no capture, and /v1/feedback answers 404. Sensitive
    features are redacted as in the input log (`log_inputs_sensitive`)."""
    capture_sample_ratio: float = Field(default=0.01, gt=0.0, le=1.0)
    """Share of answered requests captured (every row of a sampled request)."""
    capture_max_file_bytes: int = Field(default=16_777_216, ge=4096)
    """A capture file is closed and a new one opened past this size."""
    capture_max_files: int = Field(default=64, ge=1, le=100_000)
    """Most capture files in the folder (all workers): the oldest go first."""
    capture_retention_days: float = Field(default=30.0, gt=0.0, le=3650.0)
    """Capture files untouched this long are removed, and their ids forgotten (labels for them: unknown)."""
    capture_label_window_days: float = Field(default=30.0, gt=0.0, le=3650.0)
    """A label for a row served longer ago than this is refused as `late`."""
    capture_queue_size: int = Field(default=1024, ge=1, le=1_000_000)
    """Sampled answers waiting for the capture's writer thread (per worker); past it they are dropped and
    counted (`model_service_capture_dropped_total{reason="queue_full"}`), never the request."""

    fallback_dir: Path | None = None
    """Folder of a second model (card and ONNX file, same features and classes) that answers when the
    primary fails or is slow, behind a circuit breaker (model_service/model/breaker.py); unset: no fallback."""
    breaker_failures: int = Field(default=5, ge=1, le=10_000)
    """Primary failures (errors, or answers slower than `breaker_latency_budget_ms`) within
    `breaker_window_s` that open the breaker (per worker)."""
    breaker_window_s: float = Field(default=30.0, gt=0.0, le=3600.0)
    """Window in seconds over which the breaker counts primary failures."""
    breaker_latency_budget_ms: float = Field(default=100.0, gt=0.0, le=60_000.0)
    """A primary answer slower than this counts as a failure (it is still returned)."""
    breaker_open_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    """Seconds an open breaker sends every request to the fallback before trying the primary again."""
    breaker_half_open_probes: int = Field(default=3, ge=1, le=1000)
    """Good primary answers in a row that close a half-open breaker; one failure opens it again."""

    shutdown_delay_s: float = Field(default=0.0, ge=0.0, le=300.0)
    """On SIGTERM, seconds to keep serving with readiness false before draining, so load balancers
    stop routing here first."""
    graceful_timeout_s: int = Field(default=30, ge=1)
    """Longest wait for in-flight requests to finish after SIGTERM."""
    log_probes: bool = False
    """Log and count health and readiness requests too (off: they would drown the request log)."""

    @field_validator("api_key_sha256", mode="before")
    @classmethod
    def _split_hashes(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("api_key_sha256")
    @classmethod
    def _hex_digests(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for digest in value:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"expected sha256 hex digests (64 hex characters), got {digest[:8]!r}...")
        return value

    @field_validator("signing_public_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("signing_public_keys")
    @classmethod
    def _ed25519_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for key in value:
            decode_key(key)
        return value

    @model_validator(mode="after")
    def _keys_when_signatures_checked(self) -> Self:
        if self.signatures != "off" and not self.signing_public_keys:
            raise ValueError(
                f"MODEL_SERVICE_SIGNATURES={self.signatures} needs MODEL_SERVICE_SIGNING_PUBLIC_KEYS (the trusted "
                "Ed25519 public keys, base64, comma-separated) or MODEL_SERVICE_SIGNATURES=off"
            )
        return self

    @field_validator("jwt_hs256_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_HS256_SECRET_BYTES:
            raise ValueError(
                f"an HS256 secret needs at least {MIN_HS256_SECRET_BYTES} bytes, got "
                f"{len(value.get_secret_value().encode())}; generate one with `openssl rand -hex 32`"
            )
        return value

    @field_validator("jwt_rs256_public_key_file")
    @classmethod
    def _rsa_public_key(cls, value: Path | None) -> Path | None:
        if value is not None:
            rsa_public_key(value)
        return value

    @field_validator("jwt_algorithms", mode="before")
    @classmethod
    def _split_algorithms(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        refused = [name for name in value if name not in ASYMMETRIC_ALGORITHMS]
        if refused or not value:
            raise ValueError(
                f"expected asymmetric JWT algorithms from {', '.join(ASYMMETRIC_ALGORITHMS)}, got "
                f"{', '.join(refused) or 'none'}; HS* and none are refused for a published key set"
            )
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _key_set_url(cls, value: str | None) -> str | None:
        if value is not None:
            secure_url(value)
        return value

    @field_validator("rate_limit_clients")
    @classmethod
    def _positive_limits(cls, value: dict[str, tuple[float, int]]) -> dict[str, tuple[float, int]]:
        for client, (rate, burst) in value.items():
            if not (math.isfinite(rate) and rate > 0 and burst >= 1):
                raise ValueError(
                    f"{client}: expected [requests_per_second > 0, burst >= 1], got [{rate}, {burst}]"
                )
        return value

    @field_validator("log_inputs_sensitive")
    @classmethod
    def _sensitive_pairs(cls, value: str) -> str:
        parse_sensitive(value)
        return value

    @field_validator("fault_latency_ms")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("expected a finite number of milliseconds")
        return value

    @model_validator(mode="after")
    def _refuse_faults_in_prod(self) -> Self:
        if self.environment == "prod" and self.faults_enabled:
            raise ValueError(
                "fault injection (MODEL_SERVICE_FAULT_LATENCY_MS / MODEL_SERVICE_FAULT_ERROR_RATIO / "
                "MODEL_SERVICE_FAULT_INVERT_SCORES) "
                "is refused when MODEL_SERVICE_ENVIRONMENT=prod; unset them"
            )
        return self

    @model_validator(mode="after")
    def _metrics_port_apart(self) -> Self:
        if self.metrics_port == self.port:
            raise ValueError(
                f"MODEL_SERVICE_METRICS_PORT and MODEL_SERVICE_PORT are both {self.port}: /metrics has a port "
                "of its own, choose another one for it"
            )
        return self

    @model_validator(mode="after")
    def _one_jwt_key(self) -> Self:
        if self.jwt_hs256_secret is not None and self.jwt_rs256_public_key_file is not None:
            raise ValueError(
                "set MODEL_SERVICE_JWT_HS256_SECRET or MODEL_SERVICE_JWT_RS256_PUBLIC_KEY_FILE, not both"
            )
        return self

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        static = self.jwt_hs256_secret is not None or self.jwt_rs256_public_key_file is not None
        if self.jwt_jwks_url is not None and self.jwt_oidc_discovery:
            raise ValueError("set MODEL_SERVICE_JWT_JWKS_URL or MODEL_SERVICE_JWT_OIDC_DISCOVERY, not both")
        if self.jwks_enabled and static:
            raise ValueError(
                "a JWKS (MODEL_SERVICE_JWT_JWKS_URL / _OIDC_DISCOVERY) and a static JWT key "
                "(MODEL_SERVICE_JWT_HS256_SECRET / _RS256_PUBLIC_KEY_FILE) are both set; keep one"
            )
        if self.jwt_oidc_discovery:
            if self.jwt_issuer is None:
                raise ValueError(
                    "MODEL_SERVICE_JWT_OIDC_DISCOVERY needs MODEL_SERVICE_JWT_ISSUER, the issuer's URL"
                )
            secure_url(self.jwt_issuer)
        return self

    @property
    def jwks_enabled(self) -> bool:
        return self.jwt_jwks_url is not None or self.jwt_oidc_discovery

    @property
    def faults_enabled(self) -> bool:
        return self.fault_latency_ms > 0 or self.fault_error_ratio > 0 or self.fault_invert_scores

    @property
    def auth_enabled(self) -> bool:
        return (
            bool(self.api_key_sha256)
            or self.jwt_hs256_secret is not None
            or self.jwt_rs256_public_key_file is not None
            or self.jwks_enabled
        )


def parse_sensitive(text: str) -> dict[str, str]:
    """`ssn:drop,zip:hash` -> {"ssn": "drop", "zip": "hash"}."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, action = part.strip().rpartition(":")
        if not name or action not in {"hash", "drop"}:
            raise ValueError(f"expected FIELD:hash or FIELD:drop, comma-separated, got {part.strip()!r}")
        out[name] = action
    return out


def secure_url(url: str) -> str:
    """`url` when it is https, or http on a loopback address (a local key server); else `ValueError`."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    if parsed.scheme == "https" and host:
        return url
    if parsed.scheme == "http" and (host == "localhost" or _is_loopback(host)):
        return url
    raise ValueError(
        f"{url!r}: expected an https URL (http only on a loopback address): keys must not be forged in transit"
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rsa_public_key(path: Path) -> RSAPublicKey:
    """The RSA public key in a PEM file; `ValueError` naming the file and the fix when it is not one."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}; mount the PEM public key there") from None
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ValueError(
            f"{path} is not a PEM public key; expected '-----BEGIN PUBLIC KEY-----' "
            "(`openssl rsa -in private.pem -pubout`)"
        ) from None
    if not isinstance(key, RSAPublicKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an RSA public key; RS256 needs RSA")  # noqa: TRY004 - pydantic reports ValueError
    return key


def unknown_variables(environ: Mapping[str, str]) -> str | None:
    """The first `MODEL_SERVICE_*` variable that is no setting, with the closest setting's name; None if
    all are known. A misspelt variable would otherwise be ignored and its default used in silence."""
    known = [f"{ENV_PREFIX}{name.upper()}" for name in ServiceSettings.model_fields]
    for variable in sorted(environ):
        if variable.startswith(ENV_PREFIX) and variable not in known:
            close = difflib.get_close_matches(variable, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else "see docs/service.md for the settings"
            return f"{variable} is not a setting of the service; {hint}"
    return None
