"""Locust users of the shadow stage: the load test's users (loadtests/locustfile.py: same routes, rows and
batches) that also check every answer, from the user's side, came from the stable version.

An answer counts as a failure in Locust's stats unless it is HTTP 200 from the model version in
SHADOW_STABLE_VERSION (v1: the body's `model.version`; v2: `model_version`). Run by pipeline/stages/shadow.py
as `locust -f pipeline/shadow/users.py` with the locustfile's own LOADTEST_PROFILE and LOADTEST_HEADERS.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

from locust import FastHttpUser, task

from pipeline.shadow import STABLE_VERSION_VARIABLE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loadtests"))
import locustfile as load  # type: ignore[import-not-found]  # loadtests/ is a folder of Locust files, not a package

STABLE_VERSION = os.environ.get(STABLE_VERSION_VARIABLE, "")
# Locust runs the one shape class it finds in this module: the profile's, as the load test does.
SelectedShape = load.SelectedShape


def answered_by(body: Any) -> str | None:
    """The model version an answer names (v1 `model.version`, v2 `model_version`), None if none."""
    if not isinstance(body, dict):
        return None
    model = body.get("model")
    version = model.get("version") if isinstance(model, dict) else body.get("model_version")
    return version if isinstance(version, str) else None


class StableAnswerUser(FastHttpUser):
    """The load test's user (not its subclass: Locust would run the unchecked task too), each answer
    checked: 200 from the stable version, else a failure."""

    wait_time = load.ModelUser.wait_time

    @task
    def predict(self) -> None:
        (route,) = random.choices(load.ROUTES, load.WEIGHTS)
        size = 1
        if random.random() < load.TRAFFIC["batch_share"]:
            size = random.randint(2, min(load.TRAFFIC["max_batch_rows"], len(load.ROWS)))
        path, body = load._payload(route, random.sample(load.ROWS, size))  # the load test's payloads
        with self.client.post(
            path, json=body, headers=load.HEADERS, name=route, catch_response=True
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"HTTP {answer.status_code}: not the stable answer")
                return
            version = answered_by(answer.json())
            if version != STABLE_VERSION:
                answer.failure(f"answered by version {version}, not stable {STABLE_VERSION}")
            else:
                answer.success()
