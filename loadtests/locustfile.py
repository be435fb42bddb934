"""Locust users and load shapes for the model service, driven by a profile JSON file.

`python -m pipeline loadtest --env ENV` writes the profile from the environment's YAML (`loadtest:`)
and the evaluation rows, then runs this file headless. It also runs on its own:

    LOADTEST_PROFILE=reports/dev/<run-id>/loadtest/profile.json \
        locust -f loadtests/locustfile.py --host http://127.0.0.1:8000

LOADTEST_HEADERS (a JSON object, e.g. '{"Authorization": "Bearer KEY"}') adds headers to every request;
it is kept out of the profile file so that no key lands in a report. The SLO gate is not here: the
pipeline judges Locust's final JSON stats, so this file only makes traffic.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

from locust import FastHttpUser, LoadTestShape, between, task

PROFILE_VARIABLE = "LOADTEST_PROFILE"
HEADERS_VARIABLE = "LOADTEST_HEADERS"


def load_profile() -> dict[str, Any]:
    path = os.environ.get(PROFILE_VARIABLE)
    if not path:
        msg = (
            f"{PROFILE_VARIABLE} is not set: point it at a profile.json written by "
            "`python -m pipeline loadtest` (reports/<env>/<run-id>/loadtest/profile.json)"
        )
        raise SystemExit(msg)
    try:
        profile: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{PROFILE_VARIABLE}={path}: cannot read the profile: {exc}") from None
    return profile


# Locust imports this file once per run: the profile is read here so the shape can be chosen by name.
PROFILE = load_profile()
HEADERS: dict[str, str] = json.loads(os.environ.get(HEADERS_VARIABLE) or "{}")
# Rows of JSON values as a client sends them (numbers, strings, true/false, null), in FEATURES order.
ROWS: list[list[Any]] = PROFILE["rows"]
FEATURES: list[str] = PROFILE["features"]
INPUTS: list[dict[str, Any]] = PROFILE["inputs"]
TRAFFIC: dict[str, Any] = PROFILE["traffic"]
ROUTES = list(TRAFFIC["weights"])
WEIGHTS = [float(w) for w in TRAFFIC["weights"].values()]


def _tensor(spec: dict[str, Any], rows: list[list[Any]]) -> dict[str, Any]:
    """One v2 input tensor: its features' values row by row; booleans as 0/1 in a numeric tensor."""
    numeric = spec["datatype"] != "BYTES"
    data = [
        int(value) if numeric and isinstance(value, bool) else value
        for row in rows
        for value in (row[j] for j in spec["columns"])
    ]
    shape = [len(rows), len(spec["columns"])]
    return {"name": spec["name"], "shape": shape, "datatype": spec["datatype"], "data": data}


def _payload(route: str, rows: list[list[Any]]) -> tuple[str, Any]:
    """Path and JSON body of one request of `route` carrying `rows`."""
    if route == "v1_instances":
        return "/v1/predict", {"instances": rows}
    if route == "v1_records":
        return "/v1/predict", [dict(zip(FEATURES, row, strict=True)) for row in rows]
    tensors = [_tensor(spec, rows) for spec in INPUTS]
    return f"/v2/models/{PROFILE['model_name']}/infer", {"inputs": tensors}


class ModelUser(FastHttpUser):
    """A client of the model: routes by the configured weights, single rows or small batches."""

    wait_time = between(TRAFFIC["wait_min_s"], TRAFFIC["wait_max_s"])

    @task
    def predict(self) -> None:
        (route,) = random.choices(ROUTES, WEIGHTS)
        size = 1
        if random.random() < TRAFFIC["batch_share"]:
            size = random.randint(2, min(TRAFFIC["max_batch_rows"], len(ROWS)))
        path, body = _payload(route, random.sample(ROWS, size))
        # Stats are kept per route name, which is what the SLOs in the YAML refer to.
        self.client.post(path, json=body, headers=HEADERS, name=route)


class ProfileShape(LoadTestShape):
    """Target users over time from the profile; stops the run after `duration_s`."""

    abstract = True

    def __init__(self) -> None:
        super().__init__()
        self.profile: dict[str, Any] = PROFILE["profile"]

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        if elapsed >= self.profile["duration_s"]:
            return None
        return self.users_at(elapsed), self.profile["spawn_rate"]

    def users_at(self, elapsed: float) -> int:
        raise NotImplementedError


class ConstantShape(ProfileShape):
    abstract = True

    def users_at(self, elapsed: float) -> int:
        return int(self.profile["users"])


class StepShape(ProfileShape):
    """`steps` equal steps of equal length up to `users`."""

    abstract = True

    def users_at(self, elapsed: float) -> int:
        steps = int(self.profile["steps"])
        step = min(int(elapsed / (self.profile["duration_s"] / steps)), steps - 1)
        return max(1, math.ceil(self.profile["users"] * (step + 1) / steps))


class SpikeShape(ProfileShape):
    """`users`, then `spike_users` for `spike_length_s` from `spike_at_s`, then `users` again."""

    abstract = True

    def users_at(self, elapsed: float) -> int:
        third = self.profile["duration_s"] / 3
        start = self.profile["spike_at_s"] if self.profile["spike_at_s"] is not None else third
        length = self.profile["spike_length_s"] if self.profile["spike_length_s"] is not None else third
        spiking = start <= elapsed < start + length
        return int(self.profile["spike_users"]) if spiking else int(self.profile["users"])


SHAPES: dict[str, type[ProfileShape]] = {"constant": ConstantShape, "step": StepShape, "spike": SpikeShape}

# The abstract shapes above are skipped by Locust; this one, named by the profile, is the one it runs.
SelectedShape = type("SelectedShape", (SHAPES[PROFILE["profile"]["shape"]],), {"abstract": False})
