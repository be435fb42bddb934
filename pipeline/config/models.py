"""The config models: one frozen, strict pydantic model per section of an environment file.

Every field's docstring is its documentation: docs/config-reference.md and environments/schema.json
are generated from them (`python -m pipeline schema`).

Over 400 lines on purpose: it is declarations only, one model per section in the order of an
environment file, so the generated reference and this file read the same way top to bottom.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model_service.contract.card import Task


class Spec(BaseModel):
    """Base of every config model: unknown keys are errors, numbers are finite (a `.nan` bound compares
    false both ways, so a gate with one would pass anything) and loaded values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)


class DataSpec(Spec):
    """Where the training data comes from and how it is split."""

    source: Literal["sklearn", "csv", "parquet"] = "sklearn"
    """`sklearn`: a dataset bundled with scikit-learn (no download); `csv` or `parquet`: a file of your own."""
    dataset: Literal["breast_cancer", "wine", "iris", "diabetes"] = "breast_cancer"
    """Bundled scikit-learn dataset, used when source is `sklearn` (diabetes is a regression)."""
    path: Path | None = None
    """CSV (header row) or Parquet file, relative to the workspace; source `csv` or `parquet` only. Columns
    may be numbers, booleans or strings, with missing values; their types are inferred once at train time
    and written to the model card. A missing string becomes the empty string."""
    target: str | None = None
    """Name of the label (classification) or value (regression) column; source `csv` or `parquet` only."""
    test_size: float = Field(0.25, gt=0, lt=1)
    """Share of rows held out for evaluation, the gate, the load test's payloads and the parity check."""
    seed: int = 42
    """Seed of the split (stratified for classification), of the estimator and of a trainer."""

    @model_validator(mode="after")
    def _file_needs_path_and_target(self) -> Self:
        if self.source != "sklearn" and (self.path is None or self.target is None):
            msg = f"source {self.source!r} needs both 'path' (the file) and 'target' (its label column)"
            raise ValueError(msg)
        return self


MetricName = Literal[
    "roc_auc", "accuracy", "f1", "precision", "recall", "log_loss", "brier", "f1_macro", "rmse", "mae", "r2"
]
TASK_METRICS: dict[str, tuple[MetricName, ...]] = {
    "binary": ("roc_auc", "accuracy", "f1", "precision", "recall", "log_loss", "brier"),
    "multiclass": ("accuracy", "f1_macro", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
"""The metrics each task produces, the headline first: a gate may name only these."""

TRAINER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"


class ModelSpec(Spec):
    """What is trained and under which name it is registered."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    """Registered model name, artifact folder and service name (lowercase, digits and dashes)."""
    estimator: Literal["logistic_regression", "random_forest", "gradient_boosting", "xgboost", "lightgbm"] = (
        "gradient_boosting"
    )
    """Built-in estimator family, a classifier or a regressor per `task` (logistic_regression classifies
    only); features are standardised first for logistic_regression. String columns or missing values get
    a default preprocessing (median imputation, one-hot encoding that ignores unknown categories). Not
    used when `trainer` is set."""
    trainer: str | None = Field(None, pattern=TRAINER_PATTERN)
    """Your own training code instead of a built-in family: `package.module:function`, imported from the
    workspace root. It receives the training frame, the target, `params` and the seed and returns a fitted
    scikit-learn estimator or Pipeline that skl2onnx can convert (pipeline/trainer.py, docs/bring-your-model.md)."""
    task: Task | None = None
    """`binary`, `multiclass` or `regression`; empty: inferred from the target column (strings or two
    values: classification; fractional numbers: regression); set it when the target holds more than two
    integers. It decides the metrics, the gates allowed and the card's outputs."""
    params: dict[str, int | float | str | bool | None] = Field(default_factory=dict)
    """Hyper-parameters passed to the estimator (or the trainer) as keyword arguments; for xgboost and
    lightgbm the keyword arguments of their scikit-learn API (both run on one thread unless `n_jobs` says)."""
    feature_defaults: dict[str, bool | int | float | str] = Field(default_factory=dict)
    """Per feature, the value the service fills in when a request leaves it out (an object without the key,
    or a list row that ends before it). A feature added with a default is an additive change: clients of
    the release serving keep working. Added without one, it breaks them (docs/environments.md, "Changing
    the features")."""


class ParitySpec(Spec):
    """How closely the ONNX export must reproduce the original model on the evaluation rows."""

    min_label_agreement: float = Field(1.0, ge=0, le=1)
    """Share of evaluation rows where ONNX and scikit-learn predict the same class."""
    max_abs_diff: float = Field(1e-4, gt=0)
    """Largest allowed absolute difference of any class probability, or of a predicted value (regression)."""
    max_relative_diff: float = Field(1e-5, gt=0)
    """Regression: largest allowed difference of a predicted value relative to the scikit-learn value.
    Parity holds when the largest absolute difference is within `max_abs_diff` or the largest relative one
    within this (ONNX computes in float32: large values differ in absolute terms by rounding alone)."""


class ExportSpec(Spec):
    """The ONNX export of the trained model and the check that it predicts like the original."""

    opset: int = Field(17, ge=9)
    """ONNX opset targeted by skl2onnx."""
    parity: ParitySpec = ParitySpec()
    """Bounds the ONNX model must meet against scikit-learn; a miss writes no model."""


class ChampionBound(Spec):
    """Change against the version serving the environment, measured in the metric's better direction.

    A delta of +0.01 on roc_auc means the candidate is 0.01 better; on log_loss it means 0.01 lower.
    """

    min_delta: float | None = None
    """Smallest allowed absolute change; negative tolerates a regression, positive demands a gain."""
    min_relative_delta: float | None = None
    """Smallest allowed change relative to the champion's value (-0.01 tolerates a 1 % regression)."""

    @model_validator(mode="after")
    def _needs_a_bound(self) -> Self:
        if self.min_delta is None and self.min_relative_delta is None:
            raise ValueError("vs_champion needs 'min_delta' or 'min_relative_delta'")
        return self


class MetricGate(Spec):
    """The checks on one metric; at least one bound, since a gate without one passes anything."""

    min: float | None = None
    """Inclusive lower bound on the candidate's value."""
    max: float | None = None
    """Inclusive upper bound on the candidate's value."""
    vs_champion: ChampionBound | None = None
    """Bound on the change against the version the environment's alias points to."""

    @model_validator(mode="after")
    def _needs_a_bound(self) -> Self:
        if self.min is None and self.max is None and self.vs_champion is None:
            raise ValueError(
                "a metric gate needs 'min', 'max' or 'vs_champion' (a gate without a bound passes anything)"
            )
        return self


class GateSpec(Spec):
    """The gate stage: the candidate's metrics against absolute bounds and against the champion."""

    mode: Literal["enforce", "warn"] = "enforce"
    """`enforce` stops the pipeline on a failed check; `warn` reports it and lets the version through."""
    metrics: dict[MetricName, MetricGate] = Field(min_length=1)
    """Checks per metric, computed from the ONNX model's outputs on the evaluation rows. Per task: binary
    roc_auc, accuracy, f1, precision, recall, log_loss, brier; multiclass accuracy, f1_macro, log_loss;
    regression rmse, mae, r2 (lower is better for rmse, mae, log_loss, brier). A metric the task does
    not produce is an error."""


class RegistrySpec(Spec):
    """The MLflow registry that holds the versions and the environment aliases."""

    tracking_uri: str | None = None
    """MLflow tracking and registry URI; empty means a sqlite file in the workspace (no server).
    The MLFLOW_TRACKING_URI variable, when set, wins over both."""
    experiment: str | None = None
    """MLflow experiment name; defaults to the model name."""
    signing_key_file: Path | None = None
    """Ed25519 private key (PEM) `register` signs the model with (docs/service.md, Model signatures); make
    one with `python -m pipeline.release.signing keygen --out KEY.pem`. The MODEL_SIGNING_KEY_FILE variable,
    when set, wins. Empty and no variable: not signed with a key."""
    keyless_signing: bool = True
    """In a GitHub Actions job that may mint an OIDC token (`id-token: write`), `register` also signs with
    Sigstore, keyless: the signer is the workflow's identity (needs the `sigstore` package)."""


ED25519_KEY_PATTERN = r"^[A-Za-z0-9+/]{43}=$"
"""An Ed25519 public key (32 bytes, RFC 8032) in base64."""


class ServiceSpec(Spec):
    """How the reference service runs for this environment: locally, in the image and in the cluster.

    Each field maps to a MODEL_SERVICE_* setting of the service (see docs/service.md)."""

    workers: int = Field(1, ge=1, le=64)
    """Worker processes per service instance (each with its own onnxruntime session)."""
    intra_op_threads: int = Field(1, ge=0)
    """onnxruntime threads per worker; 1 when workers fill the cores."""
    max_in_flight: int = Field(64, ge=1)
    """Requests handled at once per worker before shedding load with 503 + Retry-After."""
    max_rows: int = Field(1000, ge=1)
    """Most rows in one request (422 beyond)."""
    max_body_bytes: int = Field(1_048_576, ge=64)
    """Largest request body in bytes (413 beyond)."""
    auth: Literal["none", "api-key", "jwt"] = "none"
    """`api-key`: requests need a key whose sha256 is configured; deployments read the hashes from a Secret.
    `jwt`: bearer tokens of the identity provider in `jwt`, each route needing its scope. Local runs (load
    test, rollout rehearsal, serve) make a throw-away key, or signing key and token, per run."""
    jwt: JwtSpec | None = None
    """The identity provider whose tokens are accepted (auth `jwt`)."""
    rate_limit: RateLimitSpec | None = None
    """Per-client rate limit (token bucket per API key, token subject, or with auth `none` remote address;
    per worker process); unset: none. Past it: 429 with Retry-After (docs/service.md, Rate limits)."""
    fallback: FallbackSpec | None = None
    """A second model served next to the primary behind a circuit breaker (docs/service.md, Fallback);
    unset: no fallback."""
    signatures: Literal["required", "optional", "off"] = "off"
    """The deployed service's check of the model's signature at start (MODEL_SERVICE_SIGNATURES): `required`
    refuses an unsigned model, one signed by a key not in `signing_public_keys` and a file changed after
    signing; `optional` checks a signature when there is one; `off` reads none. `register` refuses to
    register for an environment that requires signatures without a key to sign with."""
    signing_public_keys: list[Annotated[str, Field(pattern=ED25519_KEY_PATTERN)]] = Field(
        default_factory=list
    )
    """Trusted Ed25519 public keys, base64 (as `python -m pipeline.release.signing keygen` prints them).
    Public: rendered into the ConfigMap (MODEL_SERVICE_SIGNING_PUBLIC_KEYS)."""

    @model_validator(mode="before")
    @classmethod
    def _off_unquoted(cls, data: Any) -> Any:
        """YAML 1.1 reads an unquoted `off` as false: `signatures: off` means "off"."""
        if isinstance(data, dict) and data.get("signatures") is False:
            return {**data, "signatures": "off"}
        return data

    @model_validator(mode="after")
    def _keys_when_signatures_checked(self) -> Self:
        if self.signatures != "off" and not self.signing_public_keys:
            msg = (
                f"signatures {self.signatures!r} needs signing_public_keys: the trusted Ed25519 public keys "
                "(`python -m pipeline.release.signing keygen --out KEY.pem` prints one), or signatures: off"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _jwt_with_auth_jwt(self) -> Self:
        if self.auth == "jwt" and self.jwt is None:
            raise ValueError("auth 'jwt' needs service.jwt: {issuer, audience} of the identity provider")
        if self.auth != "jwt" and self.jwt is not None:
            raise ValueError(
                f"service.jwt is read only with auth 'jwt' (auth is {self.auth!r}); remove it or set auth: jwt"
            )
        return self


SCOPE_TOKEN_PATTERN = r"^[!#-\[\]-~]*$"
"""RFC 6749 3.3: a scope token's characters (printable ASCII but space, `"` and `\\`)."""


JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


class JwtSpec(Spec):
    """Bearer tokens (JWT) from the organisation's identity provider, verified with its published keys."""

    issuer: str = Field(pattern=r"^https://[^\s/]+(/\S*)?$")
    """The provider's issuer URL: the tokens' required `iss`, and where OIDC discovery finds the keys
    (`<issuer>/.well-known/openid-configuration`) when `jwks_url` is unset."""
    audience: str = Field(min_length=1)
    """The tokens' required `aud`: the identifier the provider gives this API."""
    jwks_url: str | None = Field(None, pattern=r"^https://[^\s/]+(/\S*)?$")
    """The provider's JSON Web Key Set; unset: found through OIDC discovery."""
    algorithms: list[JwtAlgorithm] = Field(
        default_factory=lambda: list[JwtAlgorithm](["RS256"]), min_length=1
    )
    """Signature algorithms accepted, of RS256/384/512, PS256/384/512, ES256/384/512 and EdDSA: asymmetric only
    (a shared secret published as a key would let anyone sign; `none` signs nothing)."""
    keys_ttl_seconds: float = Field(300.0, gt=0, le=86_400)
    """How long the fetched keys are used before a refresh (in the background; through an outage of the
    provider the keys held keep verifying)."""
    max_token_lifetime_seconds: int = Field(86_400, ge=60, le=31_536_000)
    """A token whose `exp` is further ahead is refused."""
    scope_prefix: str = Field("", pattern=SCOPE_TOKEN_PATTERN)
    """Put before the route scopes (`predict`, `model:read`, `feedback`) for providers that qualify them
    (e.g. `api://model-service/`)."""
    loadtest_token_secret: str = Field(
        "model-service-loadtest-token", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    """Secret (key `token`, in the namespace) holding a token with the `predict` and `model:read` scopes for
    the in-cluster analysis traffic; kept fresh out of band (docs/service.md, Auth)."""


class ClientRateLimit(Spec):
    """One client's own limit."""

    requests_per_second: float = Field(gt=0, le=1_000_000)
    """Sustained requests per second (per worker)."""
    burst: int = Field(ge=1, le=1_000_000)
    """Requests at once above the rate (the bucket's size)."""


class RateLimitSpec(Spec):
    """A token bucket per client, per worker process: a pod with W workers takes up to W times the rate
    from a client whose connections reach every worker."""

    requests_per_second: float = Field(gt=0, le=1_000_000)
    """Sustained requests per second each client may send (per worker)."""
    burst: int | None = Field(None, ge=1, le=1_000_000)
    """Requests a client may send at once above the rate; unset: the rate rounded up."""
    clients: dict[str, ClientRateLimit] = Field(default_factory=dict)
    """Limits of their own by client id: `key:<first 12 hex of the API key's sha256>`, `sub:<token subject>`,
    `ip:<address>` (auth `none`)."""

    @model_validator(mode="after")
    def _client_ids(self) -> Self:
        for client in self.clients:
            kind, _, name = client.partition(":")
            if kind == "key":  # an API key's id: the first 12 hex of its sha256
                valid = len(name) == 12 and all(c in "0123456789abcdef" for c in name)
            else:
                valid = kind in {"sub", "ip"} and bool(name) and not any(c.isspace() for c in name)
            if not valid:
                raise ValueError(
                    f"clients: {client!r} is no client id; expected key:<first 12 hex of the API key's "
                    "sha256>, sub:<token subject> or ip:<address>"
                )
        return self


class BreakerSpec(Spec):
    """The circuit breaker in front of the primary model (per worker; MODEL_SERVICE_BREAKER_*)."""

    failures: int = Field(5, ge=1, le=10_000)
    """Primary failures (errors, or answers slower than `latency_budget_ms`) within `window_seconds` that
    open the breaker: the fallback then answers every request."""
    window_seconds: float = Field(30.0, gt=0, le=3600)
    """Window over which failures are counted."""
    latency_budget_ms: float = Field(100.0, gt=0, le=60_000)
    """A primary answer slower than this counts as a failure (it is still returned)."""
    open_seconds: float = Field(10.0, gt=0, le=3600)
    """How long an open breaker sends everything to the fallback before trying the primary again."""
    half_open_probes: int = Field(3, ge=1, le=1000)
    """Good primary answers in a row that close a half-open breaker; one failure opens it again."""


class FallbackSpec(Spec):
    """Which model answers when the primary fails, and the breaker that decides when."""

    source: Literal["previous", "export"] = "previous"
    """`previous`: the latest other version that held this environment's alias (the one serving now, for
    a new candidate; else the alias history that `rollback` follows); none yet: served without fallback,
    said so. `export`: the exported version named by `version` (artifacts/<model>/<version>)."""
    version: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """The artifact version (folder name under artifacts/<model>/) when `source` is `export`."""
    breaker: BreakerSpec = BreakerSpec()
    """Thresholds of the circuit breaker."""

    @model_validator(mode="after")
    def _version_with_export_only(self) -> Self:
        if self.source == "export" and self.version is None:
            raise ValueError("source 'export' needs 'version': the folder name under artifacts/<model>/")
        if self.source == "previous" and self.version is not None:
            raise ValueError("'version' is only read with source 'export'; remove it or set source: export")
        return self


class ImageSpec(Spec):
    """The service image with the model baked in: where it is built from and where it goes."""

    repository: str = Field("model-service", pattern=r"^[a-z0-9][a-z0-9._/:-]*$")
    """Image repository: a local name, or `REGISTRY/OWNER/NAME` (e.g. `ghcr.io/OWNER/NAME`) to push to.
    Tags are `<git-sha>-<model-version>`."""
    push: bool = False
    """Push the image after its smoke test and record the pushed digest; needs registry credentials."""
    base_image: str | None = None
    """Base of both Dockerfile stages (build argument BASE_IMAGE): any image with python3.11 and venv. Empty:
    the Dockerfile's own, pinned by digest (docs/image.md, Base image); a tag alone is built but noted."""
    platform: Literal["linux/amd64"] = "linux/amd64"
    """Target platform of the image and of the wheels in its wheelhouse."""


AnalysisMetricName = Literal["error_ratio", "p95_ms", "p99_ms", "score_psi", "positive_rate_delta"]
PREDICTION_SHIFT_METRICS = ("score_psi", "positive_rate_delta")
"""Analysis metrics that compare the new version with the stable one on the same window (no max_vs_stable)."""


class AnalysisBound(Spec):
    """Bounds on one per-version metric measured from the service's own /metrics over a window."""

    max: float | None = Field(None, ge=0)
    """Largest allowed value for the new version (error ratio 0-1, latency in milliseconds)."""
    max_vs_stable: float | None = Field(None, gt=0)
    """Largest allowed ratio new / stable on the same window (1.5: at most 50 % worse than stable). The new
    version is worse only when the ratio is exceeded *and* a one-sided test vs stable is significant
    (`significance_level`; latency: Mann-Whitney U on the two latency histograms, error ratio: two-proportion
    z-test) *and*, for latency, the difference reaches `min_effect_ms`; ratio and effect exceeded without
    significance is inconclusive."""
    min_effect_ms: float | None = Field(None, ge=0)
    """Latency only, with `max_vs_stable`: the smallest difference new - stable (in milliseconds, on this
    quantile) that counts as slower; unset: 10 ms. A few requests delayed by 2-3 ms triple a
    sub-millisecond p95; a regression worth rolling back is both relatively and absolutely slower."""

    @model_validator(mode="after")
    def _needs_a_bound(self) -> Self:
        if self.max is None and self.max_vs_stable is None:
            raise ValueError("an analysis metric needs 'max' or 'max_vs_stable' (else it passes anything)")
        return self


LATENCY_METRICS = ("p95_ms", "p99_ms")
"""Analysis metrics read from the latency histogram; the only ones with `min_effect_ms`."""
DEFAULT_MIN_EFFECT_MS = 10.0
"""`min_effect_ms` when unset."""


class AnalysisSpec(Spec):
    """How a running version is judged, like an Argo Rollouts AnalysisTemplate (Flagger: analysis)."""

    interval_seconds: int = Field(5, ge=1, le=600)
    """Length of one measurement window."""
    count: int = Field(2, ge=1, le=100)
    """Conclusive measurements (passed or failed) per analysis step."""
    failure_limit: int = Field(0, ge=0)
    """Failed measurements tolerated per analysis step; one more aborts (Argo Rollouts' failureLimit)."""
    inconclusive_limit: int = Field(2, ge=0, le=20)
    """Inconclusive measurements tolerated per analysis step, each followed by one more window (a retry);
    one more fails the step. Argo Rollouts retries nothing (an inconclusive measurement takes one of
    `count`), so its inconclusiveLimit is this capped at `count - 1`. A window is inconclusive when the stable
    side has too few samples to compare with, or when the new version looks worse by ratio and effect
    but the test against stable is not significant."""
    min_requests: int = Field(10, ge=1)
    """Requests a version must serve in a window for it to count: fewer on the new side is 'no data'
    (failed); fewer on the stable side makes the comparisons with stable inconclusive."""
    min_predictions: int = Field(50, ge=1)
    """Predicted rows each side needs in a window before the prediction-shift checks compare them; fewer
    is inconclusive (a share from a few dozen rows moves by 0.1 by chance)."""
    significance_level: float = Field(0.01, gt=0, lt=0.5)
    """Largest one-sided p-value at which the new version counts as worse than stable (Mann-Whitney U for
    latency, two-proportion z-test for the error ratio). Lower: fewer false aborts, later detection."""
    on_no_data: Literal["fail"] = "fail"
    """A window without data is a failed measurement, never a pass (Flagger halts on missing metrics)."""
    metrics: dict[AnalysisMetricName, AnalysisBound] = Field(min_length=1)
    """Bounds per metric: error_ratio (5xx / all), p95_ms and p99_ms (request latency); prediction shift
    between new and stable on the same traffic: score_psi (PSI of their score distributions) and
    positive_rate_delta (largest absolute difference of a class's share of the predictions)."""

    @model_validator(mode="after")
    def _shift_metrics_compare_with_stable_already(self) -> Self:
        for name in PREDICTION_SHIFT_METRICS:
            bound = self.metrics.get(name)  # type: ignore[call-overload]
            if bound is not None and (bound.max_vs_stable is not None or bound.max is None):
                msg = f"metrics.{name} compares the new version with stable already: give 'max', not 'max_vs_stable'"
                raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _effect_floor_on_latency_only(self) -> Self:
        for name, bound in self.metrics.items():
            if bound.min_effect_ms is not None and name not in LATENCY_METRICS:
                msg = f"metrics.{name}.min_effect_ms: only latency metrics ({', '.join(LATENCY_METRICS)}) take it"
                raise ValueError(msg)
        return self


class DriftLevels(Spec):
    """Two levels of one drift statistic: at or above `warn` the report says WARN, above `fail` FAIL."""

    warn: float = Field(gt=0)
    """Value at or above which the statistic is reported as WARN."""
    fail: float = Field(gt=0)
    """Value above which the statistic fails (at least `warn`)."""

    @model_validator(mode="after")
    def _warn_below_fail(self) -> Self:
        if self.warn > self.fail:
            raise ValueError(f"warn {self.warn:g} is above fail {self.fail:g}")
        return self


class FeatureDriftSpec(Spec):
    """Bounds of one feature that differ from the defaults."""

    psi: DriftLevels | None = None
    """This feature's PSI levels instead of `drift.psi`."""
    ks: DriftLevels | None = None
    """This feature's KS levels instead of `drift.ks`."""


class InputLogSpec(Spec):
    """Logging a sample of the service's input rows for later analysis: off unless enabled."""

    enabled: bool = False
    """Opt-in: log sampled rows as `input` events of the service's JSON log."""
    sample_ratio: float = Field(0.01, gt=0, le=1)
    """Share of rows logged."""
    sensitive: dict[str, Literal["hash", "drop"]] = Field(default_factory=dict)
    """Features never shown in clear: `hash` (sha256, 16 hex characters) or `drop` (left out), in the
    input log and, logged or not, in the service's `model_service_feature_bin` series (bin label hashed,
    or no series)."""


class CaptureSpec(Spec):
    """What the service served, sampled, and the labels that arrive later (docs/monitoring.md): a rotating
    JSON-lines log per worker and `labels.sqlite` in one folder, which `pipeline feedback` and
    `pipeline evaluate` read. Sensitive features are redacted as `drift.log_inputs.sensitive` says."""

    enabled: bool = False
    """Capture a sample of the answers and accept labels (`POST /v1/feedback`); off: the endpoint answers 404."""
    sample_ratio: float = Field(0.01, gt=0, le=1)
    """Share of answered requests captured (every row of a sampled request); docs/bench.md has its p99 cost."""
    max_file_bytes: int = Field(16_777_216, ge=4096)
    """A capture file is closed and a new one opened past this size."""
    max_files: int = Field(64, ge=1, le=100_000)
    """Most capture files kept in the folder (all workers); the oldest go first. The folder holds at most
    about `max_files` x `max_file_bytes`, and the rendered emptyDir is sized from it."""
    retention_days: float = Field(30, gt=0, le=3650)
    """Capture files untouched this long are removed and their request ids forgotten."""
    label_window_days: float = Field(30, gt=0, le=3650)
    """A label for a row served longer ago than this is refused as `late`."""
    directory: str = Field("capture", min_length=1)
    """Where local runs (`pipeline serve`) capture and where `pipeline feedback` and `pipeline evaluate` read:
    relative to the workspace root, or absolute. In the cluster the service writes to its capture volume
    (`volume_claim`); copy that here, or point this at shared storage, to evaluate it."""
    volume_claim: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=253)
    """In the cluster: a PersistentVolumeClaim (created by the team, ReadWriteMany when several pods share
    it) mounted as the capture folder; null: an emptyDir per pod, lost when the pod goes."""

    @model_validator(mode="after")
    def _window_within_retention(self) -> Self:
        if self.label_window_days > self.retention_days:
            raise ValueError(
                f"label_window_days {self.label_window_days:g} is longer than retention_days "
                f"{self.retention_days:g}: a row's id is forgotten before its label window ends; shorten "
                "the window or keep the capture longer"
            )
        return self


class QualitySpec(Spec):
    """Live quality (`pipeline evaluate`, docs/monitoring.md): the captured rows joined with their labels,
    judged with `gates.metrics` (absolute bounds, and `vs_champion` against the version's offline figures)."""

    min_labelled_rows: int = Field(100, ge=1)
    """Labelled served rows a version needs before it gets a verdict; fewer: inconclusive (the CBPE estimate
    from the served probabilities is shown, and warns at most)."""


class DriftSpec(Spec):
    """Input drift and prediction shift against the card's reference profile (docs/drift.md)."""

    window_rows: int = Field(1000, ge=10)
    """Rows per worker behind the service's PSI gauges (MODEL_SERVICE_DRIFT_WINDOW)."""
    min_rows: int = Field(100, ge=1)
    """`pipeline drift` refuses a sample with fewer rows: below it PSI and KS are noise."""
    psi: DriftLevels = DriftLevels(warn=0.1, fail=0.25)
    """Population stability index of each feature vs its reference bins (0.1 moderate, 0.25 large)."""
    ks: DriftLevels = DriftLevels(warn=0.15, fail=0.25)
    """Kolmogorov-Smirnov statistic (largest gap of the two CDFs, 0-1) of each feature."""
    score_psi: DriftLevels = DriftLevels(warn=0.1, fail=0.25)
    """PSI of the predicted scores vs the reference scores on the evaluation rows."""
    features: dict[str, FeatureDriftSpec] = Field(default_factory=dict)
    """Per-feature bounds that replace the defaults, by feature name."""
    alert_for_minutes: int = Field(30, ge=1, le=1440)
    """How long a PSI must stay above `fail` before the PrometheusRule alert fires (sustained drift)."""
    log_inputs: InputLogSpec = InputLogSpec()
    """Sampled input rows in the service's log, for drift analysis later."""

    def bounds(self, feature: str, statistic: Literal["psi", "ks"]) -> DriftLevels:
        specific = self.features.get(feature)
        own = (specific.psi if statistic == "psi" else specific.ks) if specific is not None else None
        if own is not None:
            return own
        return self.psi if statistic == "psi" else self.ks


class PauseSpec(Spec):
    """A timed pause of a canary step."""

    seconds: int = Field(ge=1, le=3600)
    """How long to hold the current weight; there is no pause forever: approvals are explicit."""


class HeaderValueSpec(Spec):
    """How a header's value is matched, exactly one key (Argo Rollouts' `headerValue`)."""

    exact: str | None = None
    """The whole value."""
    prefix: str | None = None
    """The value's start."""
    regex: str | None = None
    """A regular expression the whole value matches (RE2 syntax in the cluster and in Caddy)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [name for name in ("exact", "prefix", "regex") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a header value takes exactly one of exact, prefix, regex (found: {given})")
        return self


class HeaderMatchSpec(Spec):
    """One request header a header route matches (Argo Rollouts' `headerName`/`headerValue`)."""

    header: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
    """The header's name (an HTTP token, compared case-insensitively)."""
    value: HeaderValueSpec
    """`{exact: "1"}`, `{prefix: ...}` or `{regex: ...}`."""


class HeaderRouteSpec(Spec):
    """A header-routed preview: requests carrying the headers go to the new version whatever the weight."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """The route's name (the HTTPRoute rule's and Argo's managed route's); the same name again replaces it."""
    match: list[HeaderMatchSpec] | None = Field(None, min_length=1, max_length=16)
    """Every header a request must carry (all of them); omitted: remove the route of that name."""


class CanaryStep(Spec):
    """One step, exactly one key: like an entry of an Argo Rollout's spec.strategy.canary.steps."""

    set_weight: int | None = Field(None, ge=1, le=100)
    """Percent of traffic sent to the new version."""
    pause: PauseSpec | None = None
    """Hold the traffic split for a while."""
    analysis: dict[str, Any] | None = None
    """Run `rollout.analysis` now (write `analysis: {}`); an abort here rolls back."""
    set_header_route: HeaderRouteSpec | None = None
    """Send requests carrying the named headers to the new version, at any weight (0 included); Argo
    Rollouts' setHeaderRoute. Every header route ends with the rollout (docs/rollout.md)."""

    @model_validator(mode="after")
    def _exactly_one_action(self) -> Self:
        actions = ("set_weight", "pause", "analysis", "set_header_route")
        given = [name for name in actions if getattr(self, name) is not None]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(f"a step has exactly one of {', '.join(actions)} (found: {found})")
        if self.analysis:
            raise ValueError("analysis steps take no options yet: write `analysis: {}`")
        return self


class BlueGreenSpec(Spec):
    """Blue-green: the new version runs as a preview, is checked, then takes all traffic at once."""

    smoke_requests: int = Field(20, ge=1, le=10_000)
    """Predictions sent straight to the preview before it may take traffic; any failure aborts."""
    preview_analysis: bool = True
    """Also run `rollout.analysis` on the preview under test traffic before the switch."""
    auto_promotion: bool = True
    """Switch traffic as soon as the preview checks pass; false waits for a person (Argo: autoPromotionEnabled)."""


class RolloutSpec(Spec):
    """How a new version replaces the one serving: the plan the local rehearsal and Argo Rollouts both run."""

    strategy: Literal["canary", "blue-green"] = "canary"
    """`canary`: shift traffic step by step with analysis; `blue-green`: check a preview, then switch at once."""
    steps: list[CanaryStep] = Field(default_factory=list)
    """Canary steps, in order."""
    blue_green: BlueGreenSpec = BlueGreenSpec()
    """Blue-green settings."""
    analysis: AnalysisSpec
    """How the new version is judged."""
    scale_down_delay_seconds: int = Field(5, ge=0, le=3600)
    """After a promotion, how long the old version keeps running (drained) before it stops."""
    breaking: Literal["blue-green", "refuse"] = "blue-green"
    """The plan for a release that breaks the clients of the version serving (a feature removed, renamed,
    reordered or added without a default, a type narrowed, the task or outputs changed): `blue-green` (the
    preview is checked, then every client moves at once; never a canary, which would send old requests to
    a model that refuses them) or `refuse` (release it under a new `model.name`, beside the old service)."""
    rollback_window: int = Field(2, ge=0, le=3)
    """Fast rollback: a release going back to one that served this environment with fewer than this many
    releases in between skips the steps and the analysis, locally and in the cluster (the Rollout's
    `spec.rollbackWindow.revisions`); 0: every rollback repeats them. At most 3, the old ReplicaSets the
    Rollout keeps (k8s/base's revisionHistoryLimit): Argo fast-tracks only to one it still has."""

    @model_validator(mode="after")
    def _canary_steps_are_sound(self) -> Self:
        if self.strategy != "canary":
            return self
        if not self.steps:
            raise ValueError("strategy 'canary' needs steps (set_weight, pause, analysis)")
        weights = [step.set_weight for step in self.steps if step.set_weight is not None]
        if not weights:
            raise ValueError("canary steps need at least one set_weight")
        if any(later <= earlier for earlier, later in itertools.pairwise(weights)):
            raise ValueError(f"set_weight values must only increase, got {weights}")
        if not any(step.analysis is not None for step in self.steps):
            raise ValueError("canary steps need at least one analysis step, or nothing can roll back")
        leading = next(step for step in self.steps if step.set_header_route is None and step.pause is None)
        if leading.set_weight is None:
            raise ValueError(
                "an analysis step needs a set_weight before it: nothing is observed at weight 0 "
                "(only set_header_route and pause may come first)"
            )
        return self


MAX_LOAD_USERS = 500
"""Hard cap on simulated users: a typo must not turn a load test into a denial of service."""
MAX_LOAD_DURATION_S = 1800
"""Hard cap on a load test's duration, in seconds."""

LoadRoute = Literal["v1_instances", "v1_records", "v2_infer"]
"""`v1_instances`: POST /v1/predict with rows as lists; `v1_records`: the same route with rows as objects
keyed by feature name; `v2_infer`: POST /v2/models/{name}/infer (Open Inference Protocol)."""


class LoadProfileSpec(Spec):
    """How many users the load test runs, and how their number changes over time."""

    shape: Literal["constant", "step", "spike"] = "constant"
    """`constant`: `users` throughout; `step`: up to `users` in `steps` equal steps; `spike`: `users`,
    then `spike_users` from `spike_at_s` for `spike_length_s`, then `users` again."""
    users: int = Field(10, ge=1, le=MAX_LOAD_USERS)
    """Simulated users (concurrent clients) at full load."""
    spawn_rate: float = Field(10.0, gt=0, le=MAX_LOAD_USERS)
    """Users started (or stopped) per second when the target changes."""
    duration_s: float = Field(12.0, ge=1, le=MAX_LOAD_DURATION_S)
    """Length of the run in seconds, ramp-up included."""
    steps: int = Field(4, ge=1, le=100)
    """Number of equal steps up to `users`; shape `step` only."""
    spike_users: int | None = Field(None, ge=1, le=MAX_LOAD_USERS)
    """Users during the spike; shape `spike` only (required there)."""
    spike_at_s: float | None = Field(None, ge=0)
    """Seconds from the start when the spike begins; default: a third of `duration_s`."""
    spike_length_s: float | None = Field(None, gt=0)
    """Length of the spike in seconds; default: a third of `duration_s`."""

    @model_validator(mode="after")
    def _spike_fits(self) -> Self:
        if self.shape != "spike":
            return self
        if self.spike_users is None or self.spike_users <= self.users:
            raise ValueError("shape 'spike' needs 'spike_users' greater than 'users'")
        start = self.spike_at_s if self.spike_at_s is not None else self.duration_s / 3
        length = self.spike_length_s if self.spike_length_s is not None else self.duration_s / 3
        if start + length > self.duration_s:
            msg = f"the spike ends at {start + length:g}s, after duration_s {self.duration_s:g}s"
            raise ValueError(msg)
        return self


def _default_weights() -> dict[LoadRoute, float]:
    return {"v1_instances": 3.0, "v1_records": 1.0, "v2_infer": 2.0}


class LoadTrafficSpec(Spec):
    """What each simulated user sends: payloads are rows of the evaluation data."""

    weights: dict[LoadRoute, float] = Field(default_factory=_default_weights, min_length=1)
    """Relative share of requests per route (each > 0); a route left out is not sent."""
    batch_share: float = Field(0.2, ge=0, le=1)
    """Share of requests carrying a small batch instead of a single row."""
    max_batch_rows: int = Field(8, ge=2, le=1000)
    """Largest batch, in rows; a batch holds 2 to this many rows."""
    wait_min_s: float = Field(0.0, ge=0, le=60)
    """Shortest pause of a user between two requests, in seconds."""
    wait_max_s: float = Field(0.1, ge=0, le=60)
    """Longest pause of a user between two requests, in seconds."""

    @model_validator(mode="after")
    def _positive_weights_and_ordered_waits(self) -> Self:
        bad = [route for route, weight in self.weights.items() if not weight > 0]
        if bad:
            raise ValueError(f"weights must be > 0 (leave a route out to not send it): {', '.join(bad)}")
        if self.wait_min_s > self.wait_max_s:
            raise ValueError(f"wait_min_s {self.wait_min_s:g} is above wait_max_s {self.wait_max_s:g}")
        return self


class SloBounds(Spec):
    """Service level objectives for the whole run or one route; missing data fails, never passes."""

    p95_ms: float | None = Field(None, gt=0)
    """Largest allowed 95th percentile of response time, in milliseconds."""
    p99_ms: float | None = Field(None, gt=0)
    """Largest allowed 99th percentile of response time, in milliseconds."""
    max_error_ratio: float | None = Field(None, ge=0, le=1)
    """Largest allowed share of failed requests (non-2xx or no answer), 0-1."""
    min_rps: float | None = Field(None, ge=0)
    """Smallest allowed throughput, in requests per second over the whole run."""

    @model_validator(mode="after")
    def _needs_a_possible_bound(self) -> Self:
        if all(v is None for v in (self.p95_ms, self.p99_ms, self.max_error_ratio, self.min_rps)):
            raise ValueError(
                "an SLO needs 'p95_ms', 'p99_ms', 'max_error_ratio' or 'min_rps' (one without a bound passes anything)"
            )
        if self.p95_ms is not None and self.p99_ms is not None and self.p99_ms < self.p95_ms:
            msg = f"p99_ms {self.p99_ms:g} is below p95_ms {self.p95_ms:g}: no run meets both; raise p99_ms"
            raise ValueError(msg)
        return self


class LoadSloSpec(Spec):
    """The SLO gate of the load test: every bound given must hold."""

    total: SloBounds = SloBounds(p95_ms=250, p99_ms=500, max_error_ratio=0.01, min_rps=20)
    """Bounds on all requests together."""
    routes: dict[LoadRoute, SloBounds] = Field(default_factory=dict)
    """Bounds per route; every route sent must also get at least one request."""


class LoadTestSpec(Spec):
    """The load test: a Locust run against the service with the exported model, gated by SLOs."""

    profile: LoadProfileSpec = LoadProfileSpec()
    """How many users, for how long."""
    traffic: LoadTrafficSpec = LoadTrafficSpec()
    """What the users send."""
    slo: LoadSloSpec = LoadSloSpec()
    """What the run must achieve."""

    @model_validator(mode="after")
    def _slo_routes_are_sent(self) -> Self:
        unsent = sorted(set(self.slo.routes) - set(self.traffic.weights))
        if unsent:
            msg = f"slo.routes names {', '.join(unsent)}, not in traffic.weights: add a weight or drop it"
            raise ValueError(msg)
        return self


class ShadowBound(Spec):
    """One bound on a comparison of the candidate's answers with stable's on the same requests."""

    min: float | None = None
    """Smallest allowed value (label_agreement)."""
    max: float | None = Field(None, ge=0)
    """Largest allowed value (deltas, PSI, KS, differences)."""
    advisory: bool = False
    """Report a breach as WARN instead of failing the stage: for a measurement whose healthy spread is too
    wide to calibrate a bound that still catches faults."""

    @model_validator(mode="after")
    def _one_bound(self) -> Self:
        if (self.min is None) == (self.max is None):
            raise ValueError("a shadow gate takes exactly one of 'min' or 'max'")
        return self


class ShadowGates(Spec):
    """The shadow stage's gates: candidate vs stable on the same mirrored requests (docs/shadow.md)."""

    label_agreement: ShadowBound = ShadowBound(min=0.85)
    """Share of paired rows where both predict the same class (0-1)."""
    positive_rate_delta: ShadowBound = ShadowBound(max=0.1)
    """Largest absolute difference of a class's share of the predictions, candidate vs stable (0-1)."""
    score_psi: ShadowBound = ShadowBound(max=1.0)
    """PSI of the two score distributions, on the monitoring contract's score bins."""
    score_ks: ShadowBound = ShadowBound(max=0.75, advisory=True)
    """Kolmogorov-Smirnov statistic of the two score distributions (0-1)."""
    max_abs_diff: ShadowBound = ShadowBound(max=0.9, advisory=True)
    """Largest probability difference on one row (0-1)."""
    error_ratio: ShadowBound = ShadowBound(max=0.01)
    """Share of the copies the candidate answered with an error or not at all (0-1)."""
    p95_ms: AnalysisBound = AnalysisBound(max=250, max_vs_stable=3.0, min_effect_ms=10)
    """The candidate's p95 latency: `max` in milliseconds; `max_vs_stable` and `min_effect_ms` as in
    `rollout.analysis` (slower only when the ratio, the effect floor and a significant rank test agree)."""


class ShadowSpec(Spec):
    """The shadow stage: the candidate answers copies of live traffic; users get stable's answer."""

    enabled: bool = True
    """Run the stage when a version serves the environment (else it is skipped with the reason)."""
    mirror_percent: int = Field(100, ge=1, le=100)
    """Share of live requests copied to the candidate (the local mirror and the HTTPRoute's RequestMirror)."""
    duration_s: float = Field(5.0, ge=1, le=MAX_LOAD_DURATION_S)
    """The local rehearsal's traffic window (seconds)."""
    queue: int = Field(256, ge=1, le=100_000)
    """Copies waiting for the candidate; beyond it a copy is dropped (counted), never the user's request."""
    min_pairs: int = Field(200, ge=1)
    """Paired rows (both answered the same request) needed for a verdict; fewer is inconclusive (fails)."""
    feature: str | None = None
    """A feature of the card whose categories (bins) get their own disagreement rate in the report."""
    significance_level: float = Field(0.01, gt=0, lt=0.5)
    """Largest one-sided p-value at which the candidate counts as slower than stable (Mann-Whitney U)."""
    gates: ShadowGates = ShadowGates()
    """Bounds on the comparison; each {max: X} or {min: X}."""


class ResourcesSpec(Spec):
    """CPU and memory of one pod (Kubernetes quantities, e.g. `250m`, `512Mi`); limits are always set."""

    requests_cpu: str = Field("250m", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    """CPU the scheduler reserves; the HPA's utilisation target is a share of it."""
    requests_memory: str = Field("256Mi", pattern=r"^[0-9]+(Ki|Mi|Gi)$")
    """Memory the scheduler reserves."""
    limits_cpu: str = Field("1", pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    """CPU the pod may use at most (throttled beyond)."""
    limits_memory: str = Field("512Mi", pattern=r"^[0-9]+(Ki|Mi|Gi)$")
    """Memory the pod may use at most (killed beyond)."""


class GitOpsSpec(Spec):
    """Where `promote --gitops` pushes the overlay it changed (Argo CD syncs from there)."""

    remote: str | None = None
    """Git remote name or URL to push to; empty: `--gitops` refuses and says to set it."""
    branch: str = "main"
    """Branch Argo CD follows (the Application's targetRevision)."""


class ArgoCDSpec(Spec):
    """The Argo CD Application rendered into k8s/argocd/<env>.yaml."""

    repo_url: str = "https://github.com/OWNER/REPO.git"
    """Git URL Argo CD reads the overlays from: replace OWNER/REPO after forking (`render --check` refuses
    the placeholder in a fork whose `origin` remote is hosted)."""
    project: str = "default"
    """Argo CD project of the Application."""
    namespace: str = "argocd"
    """Namespace Argo CD runs in (where the Application object lives)."""
    automated: bool = True
    """Sync (and prune, self-heal) every push automatically; false (prod): the CD rollout step starts the sync
    at the pushed revision once the GitHub approval was given, and nothing else syncs it."""


DURATION_PATTERN = r"^[1-9][0-9]*(s|m)$"
"""A Prometheus-style duration in whole seconds or minutes: `30s`, `1m`."""
SCRAPES_PER_INTERVAL = 2
"""Fewest scrapes in one cluster analysis interval: fewer and a measurement can repeat the last one's data."""


def duration_seconds(text: str) -> int:
    """`30s` -> 30, `2m` -> 120 (the pattern is checked by the field)."""
    return int(text[:-1]) * (60 if text.endswith("m") else 1)


class PrometheusSpec(Spec):
    """The Prometheus (Prometheus Operator) that scrapes the service and that the cluster analysis queries.

    The cluster analysis is timed from `scrape_interval` (docs/kubernetes.md): each measurement's range
    window is four scrapes, its interval two, and the first measurement waits one window."""

    scrape_interval: str = Field("30s", pattern=DURATION_PATTERN)
    """How often Prometheus scrapes each pod (the ServiceMonitor's `interval`; the Prometheus Operator's
    default is 30s). Every cluster analysis timing derives from it."""
    analysis_interval: str | None = Field(None, pattern=DURATION_PATTERN)
    """Time between two cluster analysis measurements (Argo `interval`); empty: two scrape intervals.
    At least two scrapes, or a measurement can see no new sample."""
    address: str = Field("http://prometheus-operated.monitoring.svc:9090", pattern=r"^https?://[^\s]+$")
    """URL the AnalysisTemplate queries (kube-prometheus-stack: `prometheus-operated` in its namespace)."""
    namespace: str = Field("monitoring", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Namespace Prometheus runs in: the NetworkPolicy admits its pods (label app.kubernetes.io/name=prometheus)."""
    selector_labels: dict[str, str] = Field(default_factory=lambda: {"release": "kube-prometheus-stack"})
    """Labels put on the ServiceMonitor and PrometheusRule so the Prometheus picks them up:
    kube-prometheus-stack selects `release: <its Helm release name>` unless its
    `serviceMonitorSelectorNilUsesHelmValues`/`ruleSelectorNilUsesHelmValues` are false."""

    @property
    def scrape_seconds(self) -> int:
        return duration_seconds(self.scrape_interval)

    @property
    def interval_seconds(self) -> int:
        """The cluster analysis interval, in seconds."""
        if self.analysis_interval is None:
            return SCRAPES_PER_INTERVAL * self.scrape_seconds
        return duration_seconds(self.analysis_interval)

    @model_validator(mode="after")
    def _interval_spans_two_scrapes(self) -> Self:
        if self.interval_seconds < SCRAPES_PER_INTERVAL * self.scrape_seconds:
            msg = (
                f"analysis_interval {self.analysis_interval} is shorter than {SCRAPES_PER_INTERVAL} scrapes "
                f"of scrape_interval {self.scrape_interval}: a measurement could see no new sample; "
                f"set it to at least {SCRAPES_PER_INTERVAL * self.scrape_seconds}s or leave it empty"
            )
            raise ValueError(msg)
        return self


class AnalysisTrafficSpec(Spec):
    """Load sent inside the cluster while the analysis runs: the load test's locustfile, users and payloads
    run as a Job metric of the AnalysisTemplate, against the new version's Service and the stable one."""

    enabled: bool = True
    """Send it (dev, staging: nothing else calls the new pods); false judges real user traffic only (prod)."""
    image: str = Field("locustio/locust:2.47.0", pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")
    """An image with Locust (2.x) and Python: the Locust project's own image; pin it by digest in your fork."""


NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CIDR_PATTERN = r"^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$|^[0-9a-fA-F:]+/[0-9]{1,3}$"
"""An IPv4 or IPv6 CIDR (a NetworkPolicy ipBlock)."""


class GatewaySpec(Spec):
    """The Gateway API Gateway the HTTPRoute attaches to (traffic_router `gateway-api`)."""

    name: str = Field("gateway", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """Name of the Gateway (created by the cluster operator, with its GatewayClass)."""
    namespace: str = Field("gateway-system", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Namespace of the Gateway."""
    proxy_namespaces: list[Annotated[str, Field(pattern=NAMESPACE_PATTERN)]] = Field(default_factory=list)
    """Namespaces whose pods may call the API port (the implementation's proxies; implementations label
    them differently, so every pod of each): empty, the Gateway's namespace (Istio, NGINX Gateway Fabric
    run the proxy there); Envoy Gateway: `envoy-gateway-system` (docs/kubernetes.md, NetworkPolicy)."""
    proxy_cidrs: list[Annotated[str, Field(pattern=CIDR_PATTERN)]] = Field(default_factory=list)
    """IP blocks that may call the API port as well: a gateway whose proxies forward from outside the pod
    network (a cloud load balancer reaching pods directly: its subnet; a proxy on the host network:
    the node CIDR)."""
    proxy_from_anywhere: bool = False
    """Admit the API port from any source: for proxies a Kubernetes NetworkPolicy cannot name (Cilium's
    per-node Envoy arrives with the reserved `ingress` identity). The API key (`service.auth`) is then the
    guard; allows add up across policies, so narrowing it takes a policy of the implementation's own in
    place of this one (Cilium: `fromEntities: [ingress]`). The metrics port stays Prometheus' alone."""

    @model_validator(mode="after")
    def _one_way_to_admit_proxies(self) -> Self:
        if self.proxy_from_anywhere and (self.proxy_namespaces or self.proxy_cidrs):
            msg = "proxy_from_anywhere admits every source: leave proxy_namespaces and proxy_cidrs empty"
            raise ValueError(msg)
        return self


SECTION_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A Gateway listener's name as an HTTPRoute's parentRefs[].sectionName takes it (the CRD's pattern)."""


class TLSSpec(Spec):
    """HTTPS where users come in (docs/kubernetes.md, TLS): the certificate is the Ingress' (nginx) or the
    Gateway listener's (gateway-api, the platform's Gateway)."""

    secret_name: str | None = Field(None, pattern=NAMESPACE_PATTERN)
    """traffic_router `nginx`: the Secret (type kubernetes.io/tls, in `deploy.namespace`) the Ingress serves
    `deploy.host` with, created out of band (cert-manager, or by hand). Not with gateway-api: there the
    certificate is the listener's (`certificateRefs`), set on the platform's Gateway."""
    listener: str | None = Field(None, pattern=SECTION_NAME_PATTERN)
    """traffic_router `gateway-api`: the name of the Gateway's HTTPS listener the HTTPRoute attaches to
    (`parentRefs[].sectionName`), so the route is served over TLS only."""


class DeploySpec(Spec):
    """How the environment runs on Kubernetes: rendered into k8s/overlays/<env> and k8s/argocd/<env>.yaml."""

    namespace: str = Field("model-serving", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Namespace the service is deployed to."""
    host: str = Field("model.example.com", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """Host name users reach the service at (the HTTPRoute's hostname, or the Ingress rule's host)."""
    traffic_router: Literal["gateway-api", "nginx"] = "gateway-api"
    """How users reach the pods and how a canary's weight is set: `gateway-api`, an HTTPRoute weighted by
    Argo Rollouts' Gateway API plugin; `nginx`, an Ingress for ingress-nginx (no releases or security
    fixes since March 2026: only for clusters that still run it)."""
    gateway: GatewaySpec = GatewaySpec()
    """The Gateway the HTTPRoute attaches to (traffic_router `gateway-api`)."""
    tls: TLSSpec | None = None
    """HTTPS at the edge: `{listener}` (gateway-api) or `{secret_name}` (nginx); empty: the route is
    rendered without TLS (the Gateway's listeners decide)."""
    ingress_namespace: str = Field("ingress-nginx", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Namespace of the ingress-nginx controller (traffic_router `nginx`), admitted by the NetworkPolicy."""
    prometheus: PrometheusSpec = PrometheusSpec()
    """Scraping and the cluster analysis' clock."""
    analysis_traffic: AnalysisTrafficSpec = AnalysisTrafficSpec()
    """Load sent in the cluster during the analysis."""
    rollouts_namespace: str = Field("argo-rollouts", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Namespace of the Argo Rollouts controller, admitted by the NetworkPolicy (its web metric calls the
    preview for the blue-green smoke test)."""
    min_replicas: int = Field(2, ge=1, le=100)
    """Fewest pods the HorizontalPodAutoscaler keeps (the PodDisruptionBudget keeps min_replicas - 1)."""
    max_replicas: int = Field(4, ge=1, le=500)
    """Most pods the HorizontalPodAutoscaler scales to."""
    target_cpu_utilization: int = Field(70, ge=10, le=100)
    """HPA target: average CPU use as a percentage of requests_cpu."""
    resources: ResourcesSpec = ResourcesSpec()
    """Requests and limits of the service container."""
    shutdown_delay_seconds: int = Field(5, ge=0, le=120)
    """On SIGTERM, seconds the pod keeps serving with readiness false, so endpoints drop it first
    (MODEL_SERVICE_SHUTDOWN_DELAY_S)."""
    graceful_timeout_seconds: int = Field(20, ge=1, le=300)
    """Longest wait for in-flight requests after the delay (MODEL_SERVICE_GRACEFUL_TIMEOUT_S); the pod's
    terminationGracePeriodSeconds is the two plus 5 s."""
    expected_user_rps: float | None = Field(None, gt=0)
    """Predictions per second real users send to this environment (its quiet hours, not its peak); empty:
    no users are expected (dev, staging). Where it is set, the PrometheusRule alerts when predictions stop
    (ModelServiceNoTraffic). Where no analysis traffic is sent, the canary analysis judges these users
    only, so the config is refused unless it covers what the analysis needs (`render` prints it): at least
    `rollout.analysis.min_requests` per window at the smallest canary weight an analysis step runs at."""
    image_pull_secret: str | None = Field(None, pattern=NAMESPACE_PATTERN)
    """Secret (type kubernetes.io/dockerconfigjson, in `namespace`) the pods pull the image with, put on
    their ServiceAccount's `imagePullSecrets`; set it for a private registry (ghcr.io packages are
    private until made public). Created out of band, like the API key Secret."""
    api_key_secret: str = Field("model-service-api-keys", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Name of the Secret (key `api-key-sha256`) holding accepted API key hashes when service.auth is
    `api-key`; created out of band, never committed."""
    require_digest: bool = False
    """`promote --gitops` refuses a version whose image digest is unknown (no `image_digest` tag); with
    false it falls back to the image tag."""
    gitops: GitOpsSpec = GitOpsSpec()
    """Where `promote --gitops` pushes."""
    argocd: ArgoCDSpec = ArgoCDSpec()
    """The Argo CD Application of this environment."""

    @model_validator(mode="after")
    def _replicas_in_order(self) -> Self:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas {self.max_replicas} < min_replicas {self.min_replicas}")
        return self

    @model_validator(mode="after")
    def _tls_for_the_router(self) -> Self:
        tls = self.tls
        if tls is None:
            return self
        if self.traffic_router == "nginx" and (tls.secret_name is None or tls.listener is not None):
            raise ValueError(
                "tls with traffic_router nginx: set tls.secret_name (the kubernetes.io/tls Secret the Ingress "
                "serves), not tls.listener"
            )
        if self.traffic_router == "gateway-api" and (tls.listener is None or tls.secret_name is not None):
            raise ValueError(
                "tls with traffic_router gateway-api: set tls.listener (the Gateway's HTTPS listener, "
                "parentRefs sectionName); the certificate is that listener's, not a tls.secret_name"
            )
        return self


SPARK_MEMORY_PATTERN = r"^[1-9][0-9]*[kmgt]$"
"""A Spark memory amount (`spark.executor.memory`, a SparkApplication's `memory`): `512m`, `2g`."""
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"
"""A CronJob schedule: five cron fields (`0 2 * * *`) or a macro (`@daily`)."""


class BatchBoundsSpec(Spec):
    """What a scored batch must look like to pass; each bound prints as a check line, and a failed one
    fails the stage (the outputs stay, without the `_SUCCESS` marker)."""

    min_rows: int = Field(1, ge=1)
    """Fewest rows read (valid and rejected): an empty or truncated export of the source table fails."""
    max_rows: int | None = Field(None, ge=1)
    """Most rows read; null: no upper bound."""
    max_rejects_share: float = Field(0.01, ge=0, le=1)
    """Largest share of rows rejected by the card's input contract (0-1), each with its reason."""
    min_score: float | None = None
    """Lowest score allowed on any row (P(classes[1]) for a binary model, the top probability for a
    multiclass one, the value for a regression: the score drift bins); null: no bound."""
    max_score: float | None = None
    """Highest score allowed on any row; null: no bound."""

    @model_validator(mode="after")
    def _ranges_in_order(self) -> Self:
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"max_rows {self.max_rows} < min_rows {self.min_rows}")
        if self.min_score is not None and self.max_score is not None and self.max_score < self.min_score:
            raise ValueError(f"max_score {self.max_score:g} < min_score {self.min_score:g}")
        return self


class SparkProcessSpec(Spec):
    """CPU and memory of one Spark process (driver or executor), in Spark's units."""

    cores: int = Field(1, ge=1, le=64)
    """Cores (`spark.driver.cores` / `spark.executor.cores`; one task per core on an executor)."""
    memory: str = Field("1g", pattern=SPARK_MEMORY_PATTERN)
    """Heap (`spark.driver.memory` / `spark.executor.memory`), e.g. `512m`, `2g`; the ONNX session and the
    Arrow batches live beside it, in the Python worker (`memory_overhead`)."""
    memory_overhead: str = Field("512m", pattern=SPARK_MEMORY_PATTERN)
    """Memory beyond the heap: the Python worker with its ONNX session and Arrow batches."""


class SparkSpec(Spec):
    """The Spark engine (`--engine spark`): the same scoring as an Arrow UDF, one ONNX session per executor."""

    master: str = Field("local[*]", pattern=r"^(local(\[(\*|[1-9][0-9]*)\])?|spark://\S+|k8s://\S+|yarn)$")
    """Where Spark runs: `local[*]` (this machine, every core), `local[N]`, `spark://HOST:PORT`,
    `k8s://https://HOST`, `yarn`; `--master` overrides it."""
    driver: SparkProcessSpec = SparkProcessSpec()
    """The driver (plans the job, collects the checks' counts)."""
    executor: SparkProcessSpec = SparkProcessSpec()
    """Each executor (scores its partitions)."""
    executor_instances: int = Field(2, ge=1, le=1000)
    """Executors on a cluster (SparkApplication `executor.instances`); `local[...]` ignores it."""
    image: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")
    """Image the SparkApplication runs: Java, pyspark, onnxruntime and this repository's `pipeline` and
    `model_service` packages; required for a scheduled batch on the spark engine."""
    version: str = Field("4.0.1", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    """Spark version of `image` (the SparkApplication's `sparkVersion`, which the operator reads)."""
    conf: dict[str, str] = Field(default_factory=dict)
    """More Spark properties, e.g. `{"spark.sql.shuffle.partitions": "64"}`."""


class BatchSpec(Spec):
    """Batch scoring (`python -m pipeline batch`, docs/batch.md): a table scored by the release serving
    the environment, with the service's input contract, drift and bounds."""

    engine: Literal["embedded", "spark"] = "embedded"
    """`embedded`: pyarrow + onnxruntime streaming in this process; `spark`: an Arrow UDF over a Spark
    DataFrame (`batch.spark`); `--engine` overrides it."""
    chunk_rows: int = Field(50_000, ge=100, le=5_000_000)
    """Rows per chunk (embedded) or per Arrow batch (Spark): memory is bounded by it, not by the input."""
    key_columns: list[str] = Field(default_factory=list)
    """Input columns copied to every score and reject row (an id, a date), besides `source_file` and
    `source_row`, which always identify the row."""
    drift: Literal["enforce", "warn", "off"] = "enforce"
    """The batch's drift against the card's reference, with the `drift:` section's bounds: `enforce`
    fails the stage on a FAIL, `warn` reports it only, `off` skips it."""
    parity_rows: int = Field(200, ge=0, le=10_000)
    """Valid rows also sent to the service (`--url`, else one started here) and compared with the batch's
    answers within `export.parity`; 0: no parity check."""
    bounds: BatchBoundsSpec = BatchBoundsSpec()
    """Row counts, rejects share and score range."""
    spark: SparkSpec = SparkSpec()
    """The Spark engine and the resources of its cluster job."""
    schedule: str | None = Field(None, pattern=CRON_PATTERN)
    """When this environment's batch runs (`scheduled_by` says where), cron syntax, e.g. `0 2 * * *`;
    null: no scheduled batch."""
    time_zone: str | None = Field(None, pattern=r"^[A-Za-z]+(/[A-Za-z0-9_+-]+)*$")
    """IANA time zone of `schedule` (e.g. `Europe/Paris`); null: the cluster's (UTC on most)."""
    input: str | None = None
    """What the scheduled batch scores: a file or a folder of parts, as a path the job can read; relative
    paths start at the checkout (CD) or at the root of `volume_claim` (cluster)."""
    output: str | None = None
    """Where the scheduled batch writes; `{date}` becomes the run's UTC date (YYYY-MM-DD), so each run
    writes a new folder (an existing one is refused)."""
    resources: ResourcesSpec = ResourcesSpec(
        requests_cpu="1", requests_memory="1Gi", limits_cpu="2", limits_memory="2Gi"
    )
    """The scheduled embedded job's pod (memory is bounded by `chunk_rows`, not by the input)."""
    deadline_seconds: int = Field(3600, ge=60, le=86_400)
    """A scheduled run still going after this long is stopped and counts as failed."""
    scheduled_by: Literal["cd", "cluster"] = "cd"
    """Who runs `schedule`: `cd`, .github/workflows/batch.yml on a GitHub runner, which must be able to
    read `input` (relative paths: from the checkout); `cluster`, a CronJob (embedded engine) or a
    ScheduledSparkApplication (spark) in the environment's overlay, reading and writing `volume_claim`."""
    image: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9._/:@-]*$")
    """Image of the cluster's embedded job: this repository at /opt/model-cicd with its `pipeline` and
    `service` dependency groups (docs/batch.md, "In the cluster": the service image carries the service
    alone); pin it by digest. Required when `scheduled_by` is `cluster` on the embedded engine."""
    volume_claim: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """PersistentVolumeClaim the cluster's job reads `input` from and writes `output` to, both relative to
    its root (ReadWriteMany for spark: the executors share it). Required with `scheduled_by: cluster`."""
    secret: str | None = Field(None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """Secret whose keys become the cluster job's environment: MLFLOW_TRACKING_URI (the registry the job
    finds the release in) and its credentials; null: `registry.tracking_uri` needs none."""

    @model_validator(mode="after")
    def _schedule_is_complete(self) -> Self:
        if self.schedule is None:
            return self
        missing = [name for name in ("input", "output") if getattr(self, name) is None]
        if missing:
            msg = f"schedule is set without {' and '.join(missing)}: say what the job reads and writes"
            raise ValueError(msg)
        if self.scheduled_by == "cd":
            return self
        if self.engine == "spark" and self.spark.image is None:
            msg = "schedule runs spark in the cluster: set spark.image (Java, pyspark, this repository)"
            raise ValueError(msg)
        if self.engine == "embedded" and self.image is None:
            msg = "schedule runs in the cluster: set image (this repository's batch image, docs/batch.md)"
            raise ValueError(msg)
        if self.volume_claim is None:
            msg = "schedule runs in the cluster: set volume_claim (the claim holding input and output)"
            raise ValueError(msg)
        for name in ("input", "output"):
            path = str(getattr(self, name))
            if path.startswith("/") or "://" in path:
                msg = (
                    f"{name} {path!r}: in the cluster it is a path on volume_claim {self.volume_claim}; give "
                    "it relative to the volume's root (mount an object store as a volume: docs/batch.md)"
                )
                raise ValueError(msg)
        return self


class MonitoringSpec(Spec):
    """The scheduled checks of the release serving the environment (`python -m pipeline monitor`,
    .github/workflows/monitor.yml, docs/monitoring.md): drift and live quality; a failing verdict opens or
    updates one GitHub issue and, where `retrain` allows, dispatches CD to retrain."""

    schedule: str | None = Field(None, pattern=CRON_PATTERN)
    """When .github/workflows/monitor.yml checks this environment, cron syntax in UTC (e.g. `0 6 * * *`;
    the workflow must list it: `render --check` says so); null: only by hand."""
    metrics_url: str | None = Field(None, pattern=r"^https?://[^\s/]+(/\S*)?$")
    """The running service's metrics port (e.g. `http://model.model-prod.svc:9000`): drift reads its bin
    counters; null: drift reads the captured rows (`capture:`)."""
    retrain: bool = False
    """On a failing verdict, also dispatch .github/workflows/cd.yml up to this environment (once per open
    issue): the retrained model then passes every gate as any release does."""
    issue_label: str = Field("model-monitor", min_length=1, max_length=50, pattern=r"^[^,]+$")
    """The label of the issue a failing verdict opens; one open issue per environment carries it."""


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOCK_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"


class TimeWindowSpec(Spec):
    """A weekly window in `promotion.time_zone`: on `days`, from `start` to `end`."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    """Days the window opens on (`mon` ... `sun`)."""
    start: str = Field("00:00", pattern=CLOCK_PATTERN)
    """Opening time, `HH:MM`."""
    end: str = Field("24:00", pattern=CLOCK_PATTERN)
    """Closing time, `HH:MM`, excluded; earlier than `start`: the window closes the next day (`22:00` to
    `06:00`)."""

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == "24:00":
            raise ValueError("start 24:00: a window opens at 00:00 to 23:59")
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: an empty window; set two times")
        return self


class ErrorBudgetSpec(Spec):
    """How much of the environment's error budget must be left for a release to enter it. The budget is
    `loadtest.slo.total.max_error_ratio` (the environment's availability SLO) times the predictions of
    the last `window_days`; what 5xx answers used of it is read from Prometheus."""

    min_remaining: float = Field(gt=0, le=1)
    """Share of the budget (0-1) that must be left; below it, promotions into the environment wait."""
    window_days: int = Field(28, ge=1, le=90)
    """The SLO's rolling window, in days."""
    prometheus_url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    """Prometheus to ask, reachable from where `promote` runs; empty: `deploy.prometheus.address`."""


class PromotionSpec(Spec):
    """When a release may enter this environment (docs/environments.md, "Promotion policy"). `promote`
    checks every clause, names the one that blocks and when it would pass; the report shows the verdict."""

    model_config = ConfigDict(serialize_by_alias=True)  # dumps `from`, as the YAML writes it

    from_: str | None = Field(None, alias="from", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    """The environment a release must have passed first: it served there (alias history) and was not
    rejected; empty: no such clause."""
    soak_hours: float = Field(0, ge=0, le=24 * 30)
    """Hours the release (the same model version and image digest) must have served `from` without a
    rollback; 0: no soak."""
    time_zone: str = Field("UTC", pattern=r"^[A-Za-z]+(/[A-Za-z0-9_+-]+)*$")
    """IANA time zone the windows are read in (`Europe/Berlin`)."""
    allow: list[TimeWindowSpec] = Field(default_factory=list)
    """Windows promotions may happen in; empty: any time not denied."""
    deny: list[TimeWindowSpec] = Field(default_factory=list)
    """Windows no promotion happens in, even inside an allowed one (a Friday afternoon, a holiday week)."""
    error_budget: ErrorBudgetSpec | None = None
    """The least error budget left for a release to enter; empty: not checked."""
    approval: Literal["environment", "pull_request"] = "environment"
    """Who approves a promotion: `environment` (the GitHub Environment's required reviewers, on the plans
    that have them) or `pull_request` (`promote --gitops` opens a pull request against the deploy branch
    with the evidence as commit statuses; CODEOWNERS review and merge it: docs/ci.md)."""

    @model_validator(mode="after")
    def _soak_needs_from(self) -> Self:
        if self.soak_hours and self.from_ is None:
            raise ValueError("soak_hours is set without 'from': name the environment the release soaks in")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"time_zone {self.time_zone!r} is not a known IANA zone, e.g. Europe/Berlin"
            raise ValueError(msg) from None
        return self


SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
"""A key of a Kubernetes Secret's data."""
ALERT_DURATION_PATTERN = r"^[1-9][0-9]*(s|m|h)$"
"""An Alertmanager duration in whole seconds, minutes or hours: `30s`, `5m`, `4h`."""
Severity = Literal["page", "ticket"]
"""The `severity` label of the rendered alerts: `page` wakes someone, `ticket` is read in working hours."""


class SecretKeySpec(Spec):
    """One key of a Kubernetes Secret in the environment's namespace, created out of band (never committed);
    the Prometheus Operator reads it when it builds Alertmanager's configuration."""

    secret: str = Field(pattern=NAMESPACE_PATTERN)
    """Name of the Secret."""
    key: str = Field(pattern=SECRET_KEY_PATTERN)
    """Key in the Secret's data."""


class SlackReceiverSpec(Spec):
    """Alerts posted to a Slack channel through an incoming webhook."""

    webhook_url: SecretKeySpec
    """The Secret key holding the incoming webhook's URL (it is a credential)."""
    channel: str | None = Field(None, pattern=r"^[#@][^\s]+$")
    """Channel to post to (`#ml-alerts`); empty: the webhook's own channel."""


class PagerDutyReceiverSpec(Spec):
    """Alerts sent to a PagerDuty service through its Events API v2 integration."""

    routing_key: SecretKeySpec
    """The Secret key holding the integration's routing key."""
    url: str | None = Field(None, pattern=r"^https?://[^\s]+$")
    """Events API endpoint; empty: Alertmanager's default (PagerDuty's US service region)."""


class EmailReceiverSpec(Spec):
    """Alerts sent by e-mail through an SMTP server."""

    model_config = ConfigDict(serialize_by_alias=True)  # dumps `from`, as the YAML writes it

    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    """Address the alerts go to."""
    from_: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$")
    """Sender address."""
    smarthost: str = Field(pattern=r"^[a-zA-Z0-9.-]+:[0-9]{1,5}$")
    """SMTP server as host:port (`smtp.example.com:587`)."""
    username: str | None = None
    """SMTP login; empty: no authentication."""
    password: SecretKeySpec | None = None
    """The Secret key holding the SMTP password (with `username`)."""
    require_tls: bool = True
    """Refuse to send without STARTTLS."""

    @model_validator(mode="after")
    def _login_whole(self) -> Self:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together: set both for SMTP login, or neither")
        return self


class ReceiverSpec(Spec):
    """Where one receiver's alerts go: one or more of Slack, PagerDuty and e-mail."""

    slack: SlackReceiverSpec | None = None
    """A Slack channel."""
    pagerduty: PagerDutyReceiverSpec | None = None
    """A PagerDuty service."""
    email: EmailReceiverSpec | None = None
    """An e-mail address."""

    @model_validator(mode="after")
    def _goes_somewhere(self) -> Self:
        if self.slack is None and self.pagerduty is None and self.email is None:
            raise ValueError("a receiver needs slack, pagerduty or email: one that has none delivers nothing")
        return self


class AlertsSpec(Spec):
    """Who hears the PrometheusRule's alerts (docs/alerting.md): receivers, routed by the alerts' severity,
    rendered as an AlertmanagerConfig in the overlay; no receivers: none is rendered (the alerts reach only
    Alertmanager's own default route). Also the thresholds of the resource alerts."""

    receivers: dict[Annotated[str, Field(pattern=NAMESPACE_PATTERN)], ReceiverSpec] = Field(
        default_factory=dict
    )
    """Receivers by name (`pager: {pagerduty: {routing_key: {secret: alerting, key: pagerduty}}}`)."""
    routes: dict[Severity, str] = Field(default_factory=dict)
    """Severity -> receiver (`{page: pager, ticket: team-slack}`); a severity not named goes to
    `default_receiver`."""
    default_receiver: str | None = None
    """Receiver of the alerts no route takes; required when there are receivers."""
    group_by: list[str] = Field(default_factory=lambda: ["alertname", "namespace"], min_length=1)
    """Labels that group alerts into one notification."""
    group_wait: str = Field("30s", pattern=ALERT_DURATION_PATTERN)
    """How long a new group waits for more alerts before its first notification."""
    group_interval: str = Field("5m", pattern=ALERT_DURATION_PATTERN)
    """How long before a group that changed is notified again."""
    repeat_interval: str = Field("4h", pattern=ALERT_DURATION_PATTERN)
    """How long before a group still firing is notified again."""
    max_restarts: int = Field(3, ge=1, le=100)
    """Container restarts within 15 minutes that page (ModelServiceRestarting)."""
    memory_limit_share: float = Field(0.9, gt=0, lt=1)
    """Working-set memory as a share of the container's limit that opens a ticket (ModelServiceMemoryNearLimit)."""
    fd_limit_share: float = Field(0.8, gt=0, lt=1)
    """Open file descriptors as a share of a process' limit that opens a ticket (ModelServiceFdsNearLimit)."""

    @model_validator(mode="after")
    def _routes_name_receivers(self) -> Self:
        known = ", ".join(sorted(self.receivers)) or "none"
        named = {f"routes.{severity}": name for severity, name in self.routes.items()}
        if self.default_receiver is not None:
            named["default_receiver"] = self.default_receiver
        unknown = [f"{key} {name!r}" for key, name in named.items() if name not in self.receivers]
        if unknown:
            msg = f"{'; '.join(unknown)}: no such receiver (receivers: {known}); add it under receivers or fix the name"
            raise ValueError(msg)
        if self.receivers and self.default_receiver is None:
            raise ValueError(f"receivers are set but default_receiver is not: name one of {known}")
        return self


WINDOW_SCRAPES = 4
"""Scrapes in one PromQL range window: rate() needs two samples, four leave room for a missed scrape."""


@dataclass(frozen=True)
class ClusterTiming:
    """The cluster's clock for `rollout.analysis` (the local rehearsal keeps `interval_seconds`), in seconds.

    Argo starts every metric of an AnalysisRun together: measurement n (from 0) of a Prometheus metric is
    taken at `initial_delay + n * interval` over the `window` before it; the load Job runs for `load`."""

    scrape: int
    interval: int
    window: int
    initial_delay: int
    count: int

    @property
    def last_measurement(self) -> int:
        return self.initial_delay + (self.count - 1) * self.interval

    @property
    def load(self) -> int:
        """How long the in-cluster load runs: past the last measurement by one scrape, so it is counted."""
        return self.last_measurement + self.scrape

    def problems(self) -> list[str]:
        """Why these timings cannot produce data (empty when they can)."""
        out = []
        if self.interval < SCRAPES_PER_INTERVAL * self.scrape:
            out.append(
                f"interval {self.interval}s is shorter than {SCRAPES_PER_INTERVAL} scrapes of {self.scrape}s"
            )
        if self.window < WINDOW_SCRAPES * self.scrape:
            out.append(
                f"range window {self.window}s holds fewer than {WINDOW_SCRAPES} scrapes of {self.scrape}s"
            )
        if self.initial_delay < self.window:
            out.append(
                f"initialDelay {self.initial_delay}s is shorter than the window {self.window}s: the first "
                "measurement would look at time before the new version was scraped"
            )
        return out


class Config(Spec):
    """One environment, fully resolved."""

    name: str
    """The environment's name, taken from its file name."""
    model: ModelSpec
    """The model trained and registered."""
    data: DataSpec = DataSpec()
    """The training data."""
    export: ExportSpec = ExportSpec()
    """The ONNX export."""
    gates: GateSpec
    """The metric gates."""
    registry: RegistrySpec = RegistrySpec()
    """The MLflow registry."""
    service: ServiceSpec = ServiceSpec()
    """The serving app's settings."""
    loadtest: LoadTestSpec = LoadTestSpec()
    """The load test and its SLOs."""
    shadow: ShadowSpec = ShadowSpec()
    """The candidate on copies of live traffic."""
    image: ImageSpec = ImageSpec()
    """The container image."""
    rollout: RolloutSpec
    """The progressive rollout."""
    deploy: DeploySpec = DeploySpec()
    """Kubernetes and Argo CD."""
    drift: DriftSpec = DriftSpec()
    """Drift monitoring."""
    capture: CaptureSpec = CaptureSpec()
    """What the service served, sampled, and the labels that arrive later."""
    quality: QualitySpec = QualitySpec()
    """Live quality: the served rows judged with their labels."""
    batch: BatchSpec = BatchSpec()
    """Batch scoring."""
    monitoring: MonitoringSpec = MonitoringSpec()
    """Scheduled drift and live-quality checks, and what a failing verdict does."""
    promotion: PromotionSpec = PromotionSpec()
    """When a release may enter the environment."""
    alerts: AlertsSpec = AlertsSpec()
    """Where alerts go, and the resource alerts' thresholds."""

    @property
    def alias(self) -> str:
        """Registry alias of the version serving this environment."""
        return self.name

    @property
    def candidate_alias(self) -> str:
        """Registry alias of the version on its way to this environment."""
        return f"{self.name}-candidate"

    @property
    def cluster_timing(self) -> ClusterTiming:
        """`rollout.analysis` on the cluster's clock, derived from deploy.prometheus.scrape_interval."""
        prometheus = self.deploy.prometheus
        window = max(WINDOW_SCRAPES * prometheus.scrape_seconds, prometheus.interval_seconds)
        return ClusterTiming(
            scrape=prometheus.scrape_seconds,
            interval=prometheus.interval_seconds,
            window=window,
            initial_delay=window,
            count=self.rollout.analysis.count,
        )

    @property
    def analysed_canary_weight(self) -> int | None:
        """The smallest canary weight (percent) an analysis step runs at; None for blue-green or no analysis."""
        if self.rollout.strategy != "canary":
            return None
        weight, analysed = 0, []
        for step in self.rollout.steps:
            if step.set_weight is not None:
                weight = step.set_weight
            elif step.analysis is not None:
                analysed.append(weight)
        return min(analysed) if analysed else None

    @property
    def user_rps_needed(self) -> float | None:
        """Predictions per second users must send for every canary analysis window to count, where the
        environment sends no analysis traffic: min_requests / (canary weight x window); None where the
        analysis gets its own traffic or nothing is analysed."""
        weight = self.analysed_canary_weight
        if self.deploy.analysis_traffic.enabled or weight is None:
            return None
        if weight == 0:
            return math.inf
        return self.rollout.analysis.min_requests / (weight / 100 * self.cluster_timing.window)

    @model_validator(mode="after")
    def _promoted_from_another(self) -> Self:
        if self.promotion.from_ == self.name:
            msg = f"promotion.from is {self.name!r}, this environment: name the one a release passes first"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _users_cover_the_analysis(self) -> Self:
        needed, expected = self.user_rps_needed, self.deploy.expected_user_rps
        if needed is not None and (expected is None or expected < needed):
            msg = (
                f"deploy.analysis_traffic.enabled is false, so the canary analysis judges real users only: "
                f"rollout.analysis.min_requests {self.rollout.analysis.min_requests} per "
                f"{self.cluster_timing.window}s window at {self.analysed_canary_weight}% canary weight needs "
                f"{needed:.1f} predictions/s of user traffic, and deploy.expected_user_rps is "
                f"{expected if expected is not None else 'unset'}; every canary would abort on missing data. "
                "Declare the traffic the environment has at its quietest (deploy.expected_user_rps), or enable "
                "deploy.analysis_traffic, raise the first analysed set_weight, or lower min_requests"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _cluster_analysis_can_get_data(self) -> Self:
        traffic = self.deploy.analysis_traffic
        blue_green = self.rollout.blue_green
        if self.rollout.strategy == "blue-green" and blue_green.preview_analysis and not traffic.enabled:
            msg = (
                "rollout.blue_green.preview_analysis is on but deploy.analysis_traffic.enabled is false: "
                "no user reaches a blue-green preview, so its analysis would have no data; enable "
                "deploy.analysis_traffic or turn preview_analysis off"
            )
            raise ValueError(msg)
        load = self.cluster_timing.load
        if traffic.enabled and load > MAX_LOAD_DURATION_S:
            msg = (
                f"the cluster analysis (rollout.analysis.count {self.rollout.analysis.count} measurements, "
                f"deploy.prometheus intervals) needs {load}s of in-cluster load, more than the "
                f"{MAX_LOAD_DURATION_S}s cap of a load test; lower rollout.analysis.count or "
                "deploy.prometheus.analysis_interval"
            )
            raise ValueError(msg)
        return self

    def sha256(self, *sections: str) -> str:
        """Hash of the given sections (all when none), stable across key order."""
        data = self.model_dump(mode="json", include=set(sections) or None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
