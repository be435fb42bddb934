"""Online and batch answers on the same rows: a sample of the batch's valid rows is sent to the service
(`/v1/predict`, rows as objects keyed by feature name, as a client sends them) and its labels and
probabilities (or values) are compared with what the batch wrote for those rows, within `export.parity`."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.batch.scoring import PREDICTION, PROBABILITY_PREFIX, SOURCE_FILE, SOURCE_ROW, Scorer
from pipeline.batch.source import Source, read_chunks
from pipeline.config import Config
from pipeline.errors import StageError
from pipeline.stage import Check

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Pairs:
    """The sampled rows: what the batch wrote and what the service answered, row for row."""

    rows: int
    batch_labels: list[Any]
    service_labels: list[Any]
    batch_values: np.ndarray
    """[N, C] probabilities (classification) or [N, 1] values (regression)."""
    service_values: np.ndarray


def sample_rows(
    source: Source, scorer: Scorer, scores_dir: Path, n: int
) -> tuple[list[dict[str, Any]], pa.Table]:
    """The first `n` rows of the first part, those the batch scored: (the rows as a client sends them,
    the score rows the batch wrote for them, in the same order). Only those rows are read back."""
    import pyarrow.dataset as ds  # noqa: PLC0415

    first_chunk = next(read_chunks(source, scorer.columns, n), None)
    if first_chunk is None:
        return [], pa.table({})
    part, first, batch = first_chunk
    wanted = (
        (ds.field(SOURCE_FILE) == part)
        & (ds.field(SOURCE_ROW) >= first)
        & (ds.field(SOURCE_ROW) < first + batch.num_rows)
    )
    written = ds.dataset(scores_dir, format=source.format).to_table(filter=wanted).sort_by(SOURCE_ROW)
    requests = scorer.client_rows(batch)
    return [requests[row - first] for row in written[SOURCE_ROW].to_pylist()], written


def api_key_headers(config: Config, url: str, variable: str) -> dict[str, str]:
    """What a service given by URL needs to answer: its API key from `variable` when `service.auth` is on."""
    if config.service.auth != "api-key":
        return {}
    key = os.environ.get(variable)
    if not key:
        raise StageError(
            f"service.auth is 'api-key' for {config.name}: set {variable} to a key the service at {url} "
            "accepts"
        )
    return {"Authorization": f"Bearer {key}"}


def ask_service(
    url: str, headers: Mapping[str, str], rows: Sequence[dict[str, Any]], max_rows: int
) -> list[dict[str, Any]]:
    """The service's answers for `rows`, in requests of at most `max_rows` rows."""
    answers = []
    for start in range(0, len(rows), max_rows):
        body = json.dumps({"instances": list(rows[start : start + max_rows])}).encode()
        request = urllib.request.Request(
            f"{url}/v1/predict", data=body, headers={"Content-Type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                answers.append(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise StageError(
                f"{url}/v1/predict answered {exc.code} to rows the batch scored: {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise StageError(f"{url}/v1/predict did not answer: {exc}") from None
    return answers


def pairs(scorer: Scorer, written: pa.Table, answers: Sequence[dict[str, Any]]) -> Pairs:
    card = scorer.card
    service_labels = [label for answer in answers for label in answer["predictions"]]
    if card.is_regression:
        batch_values = np.asarray(written[PREDICTION].to_pylist(), dtype=np.float64).reshape(-1, 1)
        service_values = np.asarray(service_labels, dtype=np.float64).reshape(-1, 1)
    else:
        columns = [f"{PROBABILITY_PREFIX}{c}" for c in card.classes]
        batch_values = np.column_stack(
            [np.asarray(written[name].to_pylist(), dtype=np.float64) for name in columns]
        )
        service_values = np.asarray(
            [p for answer in answers for p in answer["probabilities"]], dtype=np.float64
        )
    return Pairs(
        len(service_labels), written[PREDICTION].to_pylist(), service_labels, batch_values, service_values
    )


def parity_checks(config: Config, compared: Pairs, regression: bool) -> list[Check]:
    """Same labels (classification) and values within `export.parity.max_abs_diff`."""
    bounds = config.export.parity
    checks = []
    if not regression:
        same = sum(
            str(a) == str(b) for a, b in zip(compared.batch_labels, compared.service_labels, strict=True)
        )
        checks.append(
            Check.bounded(
                "parity",
                "label agreement",
                same / max(compared.rows, 1),
                ">=",
                bounds.min_label_agreement,
                note=f"{compared.rows} rows vs the service",
            )
        )
    diff = float(np.max(np.abs(compared.batch_values - compared.service_values))) if compared.rows else 0.0
    what = "value" if regression else "probability"
    checks.append(
        Check.bounded(
            "parity",
            f"max abs {what} diff",
            diff,
            "<=",
            bounds.max_abs_diff,
            digits=3,
            note=f"{compared.rows} rows",
        )
    )
    return checks
