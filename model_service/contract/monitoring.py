"""What the service exports for monitoring, defined once: metric and label names, and the drift statistics.

The pipeline reads these too (the reference profile in pipeline/ml/profile.py, the local rollout analysis,
the rendered AnalysisTemplate and alert rules, `pipeline drift --url`), so a name or the bin convention
cannot differ between the service and what judges it. The service never imports the pipeline; this module
imports numpy only.

Bin convention (numeric features and scores): a profile's `edges` are `[e0, e1, ..., ek]` (k bins); a
value's bin is the number of inner edges `e1..e(k-1)` that are <= the value, compared in float32 (the
model's input dtype, so both sides agree on a value equal to an edge). Values below `e0` land in the first bin and values above `ek` in the last:
every row is counted once. A nullable numeric feature has one more bin, at index k, for missing values.
Categorical features: bin i < m holds `categories[i]`, bin m ("other") unknown and missing values
(`category_index`).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

# --- metrics, as registered with prometheus_client ---------------------------------------------------
# A counter's samples end in `_total`; a histogram's in `_bucket`, `_sum` and `_count`.
REQUESTS = "model_service_requests"
"""Counter: HTTP requests by route and status."""
REQUEST_DURATION = "model_service_request_duration_seconds"
"""Histogram: HTTP request latency by route and status."""
INFERENCE_DURATION = "model_service_inference_duration_seconds"
"""Histogram: onnxruntime time per request."""
REQUEST_ROWS = "model_service_request_rows"
"""Histogram: rows per prediction request."""
IN_FLIGHT = "model_service_in_flight_requests"
"""Gauge: requests being handled."""
MODEL_INFO = "model_service_model_info"
"""Gauge (1): the model served, by name, version and sha256."""
FEATURE_BIN = "model_service_feature_bin"
"""Counter: input values by feature and reference bin."""
SCORE_BIN = "model_service_score_bin"
"""Counter: predicted scores by reference bin."""
PREDICTED_CLASS = "model_service_predicted_class"
"""Counter: predictions by class."""
FEATURE_PSI = "model_service_feature_psi"
"""Gauge: PSI of each feature's recent inputs against the reference."""
SCORE_PSI = "model_service_score_psi"
"""Gauge: PSI of the recent scores against the reference."""
FALLBACK_ANSWERS = "model_service_fallback_answers"
"""Counter: answers the fallback model gave, by reason (model_service/model/breaker.py)."""
PRIMARY_FAILURES = "model_service_primary_failures"
"""Counter: primary model failures the circuit breaker counted, by kind (`error`, `slow`)."""
BREAKER_STATE = "model_service_breaker_state"
"""Gauge: the circuit breaker's state, 1 for the current one (`closed`, `open`, `half_open`)."""
WORKER_GC_COLLECTIONS = "model_service_worker_gc_collections"
"""Gauge per worker (a `pid` label): the garbage collector's collections so far, by `generation`
(gc.get_stats). The metrics port reads the processes' CPU, memory and descriptors from /proc itself; this
one only a worker knows."""
RATE_LIMITED = "model_service_rate_limited"
"""Counter: requests refused with 429 by the per-client rate limit, by route (never by client: the label
set stays bounded whatever the number of clients)."""
CAPTURE_ROWS = "model_service_capture_rows"
"""Counter: rows written to the capture (model_service/operations/capture.py)."""
CAPTURE_DROPPED = "model_service_capture_dropped"
"""Counter: sampled answers the capture dropped, by reason (`queue_full`, `index_error`, `write_error`)."""
LIVE_QUALITY = "model_live_quality"
"""Gauge: a gated metric on the labelled served rows of a version (`pipeline evaluate`, in the capture's
`live_quality.prom`, which the metrics port appends), by model, version and metric."""
LIVE_QUALITY_ESTIMATE = "model_live_quality_estimate"
"""Gauge: the CBPE estimate of a metric from the served probabilities (assumes calibration), by model,
version and metric."""
LIVE_QUALITY_LABELLED_ROWS = "model_live_quality_labelled_rows"
"""Gauge: served rows of a version with a label."""
LIVE_QUALITY_VERDICT = "model_live_quality_verdict"
"""Gauge: the live-quality verdict of a version, 1 for the current one (`pass`, `warn`, `fail`,
`inconclusive`)."""

# The samples the pipeline reads from /metrics or queries in PromQL.
REQUESTS_TOTAL = f"{REQUESTS}_total"
REQUEST_DURATION_BUCKET = f"{REQUEST_DURATION}_bucket"
FEATURE_BIN_TOTAL = f"{FEATURE_BIN}_total"
SCORE_BIN_TOTAL = f"{SCORE_BIN}_total"
PREDICTED_CLASS_TOTAL = f"{PREDICTED_CLASS}_total"

REQUEST_DURATION_BOUNDS = (
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05,
    0.075, 0.1, 0.15, 0.25, 0.3, 0.5, 1.0, 2.5,
)  # fmt: skip
"""The request latency histogram's bucket bounds (seconds): fine enough for p95/p99 of a sub-millisecond
service, wide enough for an overloaded one. An environment's latency SLO (`loadtest.slo.total.p95_ms`) must
be one of them: the burn-rate alerts count the requests under it from its bucket (pipeline/deploy/alerting.py)."""

# --- labels -------------------------------------------------------------------------------------------
ROUTE_LABEL = "route"
"""The route template (`PREDICT_ROUTE`, `V2_INFER_ROUTE`, `/v1/model`, ...; unknown paths: `unmatched`)."""
STATUS_LABEL = "status"
"""The HTTP status, as a string."""
FEATURE_LABEL = "feature"
BIN_LABEL = "bin"
"""A reference bin's index, as a string (bin i lies between edges i and i+1)."""
CLASS_LABEL = "class"
MODEL_INFO_LABELS = ("name", "version", "sha256")
FALLBACK_REASON_LABEL = "reason"
"""Why the fallback answered: `primary_error` (the primary raised) or `breaker_open`."""
PRIMARY_FAILURE_KIND_LABEL = "kind"
STATE_LABEL = "state"
DROP_REASON_LABEL = "reason"
MODEL_LABEL = "model"
VERSION_LABEL = "version"
METRIC_LABEL = "metric"
"""A gated metric's name (`accuracy`, `roc_auc`, `rmse`, ...)."""
VERDICT_LABEL = "verdict"

PREDICT_ROUTE = "/v1/predict"
V2_INFER_ROUTE = "/v2/models/{name}/infer"
PREDICTION_ROUTES = (PREDICT_ROUTE, V2_INFER_ROUTE)
"""The routes whose requests the canary judges (local and in the cluster) count: predictions, not probes."""
PREDICTION_ROUTES_REGEX = "|".join(route.replace("{name}", "[^/]+") for route in PREDICTION_ROUTES)
"""PromQL `=~` pattern (anchored by Prometheus) matching exactly the `route` label of PREDICTION_ROUTES."""

# --- drift statistics ---------------------------------------------------------------------------------
PSI_FLOOR = 1e-4
"""Smallest share used in PSI, so an empty bin counts as rare, not as infinitely surprising."""


def inner_edges(edges: Sequence[float] | npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """The edges a value is compared with (all but the first and the last), in float32."""
    return np.asarray(edges[1:-1], dtype=np.float32)


def bin_index(inner: npt.NDArray[np.float32], values: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Bin of each value given `inner_edges(edges)`: the number of inner edges <= the value, in float32."""
    return np.searchsorted(inner, np.asarray(values, dtype=np.float32), side="right")


def category_index(categories: Sequence[str], values: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """Bin of each string value of a categorical feature: its index in the sorted `categories`, or
    `len(categories)` (the "other" bin) for an unknown category or a missing value (None or "")."""
    known = np.asarray(categories, dtype=object)
    text = np.asarray(
        ["" if v is None else str(v) for v in np.asarray(values, dtype=object).reshape(-1)], dtype=object
    )
    if not len(known):
        return np.zeros(len(text), dtype=np.intp)
    at = np.minimum(np.searchsorted(known, text), len(known) - 1)
    return np.where(known[at] == text, at, len(known)).astype(np.intp)


def scores(probabilities: npt.ArrayLike) -> npt.NDArray[Any]:
    """The score of each row of probabilities [N, C]: the positive-class probability (binary), else the
    largest probability."""
    p = np.asarray(probabilities)
    return p[:, 1] if p.shape[1] == 2 else p.max(axis=1)


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    """Population stability index of two distributions over the same bins (shares, each floored)."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))
