"""The mirror as a process between real service processes: users get stable's answers whatever the
candidate does, copies beyond the queue are dropped and counted, and both answers are kept by request id.

Gateway API's RequestMirror has the same contract: "responses from the mirrored backend are ignored"
(gateway-api HTTPRequestMirrorFilter); here the candidate's answers are recorded for the judge instead."""

import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.adapters.processes import free_port, started_process, stop
from pipeline.adapters.service_process import ServiceProcess, running_service
from pipeline.config import Config, load_config

REPO = Path(__file__).parents[3]
ROW = [14.0, 20.0, 90.0, 600.0, 0.1, 0.1, 0.08, 0.05, 0.18, 0.06] * 3


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config("dev", REPO / "environments")


@pytest.fixture(scope="module")
def stable(
    config: Config, plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    with running_service(
        config, plain_model_dir, tmp_path_factory.mktemp("stable") / "stable.log"
    ) as service:
        yield service


def mirrored(
    stable: ServiceProcess,
    candidate: ServiceProcess,
    out: Path,
    requests: int,
    *,
    queue: int = 256,
    percent: int = 100,
) -> tuple[list[httpx.Response], list[dict[str, Any]]]:
    """`requests` predictions through a mirror in front of `stable`; the users' answers and the exchanges."""
    port = free_port()
    command = [sys.executable, "-m", "pipeline.shadow.mirror", "--stable", stable.url, "--candidate", candidate.url,
               "--port", str(port), "--out", str(out), "--queue", str(queue), "--senders", "1",
               "--percent", str(percent), "--drain", "5"]  # fmt: skip
    with started_process(
        command, dict(os.environ), out.with_suffix(".log"), f"http://127.0.0.1:{port}/readyz", what="mirror"
    ) as process:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            answers = [client.post("/v1/predict", json={"instances": [ROW]}) for _ in range(requests)]
        stop(process)
    return answers, [json.loads(line) for line in out.read_text().splitlines()]


def test_a_failing_candidate_never_fails_a_user(
    config: Config, stable: ServiceProcess, plain_model_dir: Path, tmp_path: Path
) -> None:
    failing = {"MODEL_SERVICE_FAULT_ERROR_RATIO": "1"}
    with running_service(config, plain_model_dir, tmp_path / "candidate.log", settings=failing) as candidate:
        answers, exchanges = mirrored(stable, candidate, tmp_path / "exchanges.jsonl", 30)
    assert [a.status_code for a in answers] == [200] * 30
    assert len(exchanges) == 30
    assert {e["copy"] for e in exchanges} == {"answered"}
    assert {e["candidate"]["status"] for e in exchanges} == {500}
    # paired by id: the id the user got back is the one both services saw
    assert [a.headers["x-request-id"] for a in answers] == [e["request_id"] for e in exchanges]
    assert all(
        e["stable"]["request_id"] == e["candidate"]["request_id"] == e["request_id"] for e in exchanges
    )


def test_a_slow_candidate_drops_copies_not_requests(
    config: Config, stable: ServiceProcess, plain_model_dir: Path, tmp_path: Path
) -> None:
    """Each copy takes the candidate 1 s and one sender drains a queue of 2: most copies are dropped
    (counted), and every user still got stable's answer, the user never waiting on the candidate."""
    slow = {"MODEL_SERVICE_FAULT_LATENCY_MS": "1000"}
    with running_service(config, plain_model_dir, tmp_path / "candidate.log", settings=slow) as candidate:
        answers, exchanges = mirrored(stable, candidate, tmp_path / "exchanges.jsonl", 40, queue=2)
    assert [a.status_code for a in answers] == [200] * 40
    copies = Counter(e["copy"] for e in exchanges)
    assert copies["dropped"] >= 20, copies
    assert sum(copies.values()) == 40
    assert all(e["candidate"] is None for e in exchanges if e["copy"] == "dropped")


def test_percent_copies_an_even_share(
    config: Config, stable: ServiceProcess, plain_model_dir: Path, tmp_path: Path
) -> None:
    with running_service(config, plain_model_dir, tmp_path / "candidate.log") as candidate:
        answers, exchanges = mirrored(stable, candidate, tmp_path / "exchanges.jsonl", 40, percent=25)
    assert [a.status_code for a in answers] == [200] * 40
    assert Counter(e["copy"] for e in exchanges) == {"answered": 10, "not mirrored": 30}
    assert [e["copy"] for e in exchanges[:4]] == ["not mirrored"] * 3 + ["answered"]
