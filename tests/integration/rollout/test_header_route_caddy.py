"""The header-routed preview rehearsed on the local splitter: real Caddy in front of two real service
processes, the stable version and a candidate whose scores are inverted (so every answer says who gave it).
At weight 0, requests carrying the header reach the candidate and every other request reaches stable; the
route survives weight changes (a PATCH of the split's weights) and, removed, sends the header to stable."""

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.adapters.caddy import CaddySplitter
from pipeline.adapters.service_process import running_service
from pipeline.config import Config, load_config
from pipeline.rollout.plan import HeaderMatch

REPO = Path(__file__).resolve().parents[3]
REQUESTS = 12
"""Per check: Caddy's weighted round robin would send some of them to the candidate at any weight > 0."""


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config("dev", REPO / "environments")


@pytest.fixture(scope="module")
def versions(
    config: Config, plain_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Caddy in front of stable and the inverted candidate; yields the splitter, each version's direct
    answer to the request, the request and the client headers. Everything stops on the way out."""
    tmp = tmp_path_factory.mktemp("header-route")
    with ExitStack() as stack:
        stable = stack.enter_context(running_service(config, plain_model_dir, tmp / "stable.log"))
        candidate = stack.enter_context(
            running_service(
                config,
                plain_model_dir,
                tmp / "candidate.log",
                settings={"MODEL_SERVICE_FAULT_INVERT_SCORES": "true"},
            )
        )
        splitter = CaddySplitter.start(
            stable.url.removeprefix("http://"), candidate.url.removeprefix("http://"), tmp
        )
        stack.callback(splitter.stop)
        rows = (plain_model_dir / "eval.json").read_text()
        body = {"instances": json.loads(rows)["rows"][:5]}
        answers = {
            name: httpx.post(f"{url}/v1/predict", json=body, headers=stable.headers).json()["predictions"]
            for name, url in (("stable", stable.url), ("candidate", candidate.url))
        }
        assert answers["stable"] != answers["candidate"]  # the inverted scores flip each prediction
        yield {"splitter": splitter, "answers": answers, "body": body, "headers": stable.headers}


def who_answered(versions: dict[str, Any], extra: dict[str, str]) -> list[str]:
    """Which version answered each of REQUESTS predictions sent through Caddy with the `extra` headers."""
    splitter: CaddySplitter = versions["splitter"]
    by_answer = {str(answer): name for name, answer in versions["answers"].items()}
    with httpx.Client(timeout=5) as client:
        return [
            by_answer[
                str(
                    client.post(
                        f"{splitter.url}/v1/predict",
                        json=versions["body"],
                        headers=versions["headers"] | extra,
                    ).json()["predictions"]
                )
            ]
            for _ in range(REQUESTS)
        ]


def test_at_weight_0_the_header_reaches_the_candidate_and_nothing_else_does(versions: dict[str, Any]) -> None:
    splitter: CaddySplitter = versions["splitter"]
    splitter.set_header_route("preview", {"X-Preview": HeaderMatch("X-Preview", "exact", "1").pattern()})
    assert who_answered(versions, {"X-Preview": "1"}) == ["candidate"] * REQUESTS
    assert who_answered(versions, {}) == ["stable"] * REQUESTS
    # The value is matched whole, the name case-insensitively (HTTP header names).
    assert who_answered(versions, {"X-Preview": "10"}) == ["stable"] * REQUESTS
    assert who_answered(versions, {"x-preview": "1"}) == ["candidate"] * REQUESTS


def test_the_route_survives_a_weight_change_and_removed_sends_the_header_to_stable(
    versions: dict[str, Any],
) -> None:
    splitter: CaddySplitter = versions["splitter"]
    splitter.set_header_route("preview", {"X-Preview": HeaderMatch("X-Preview", "exact", "1").pattern()})
    splitter.set_weight(20)
    assert who_answered(versions, {"X-Preview": "1"}) == ["candidate"] * REQUESTS
    assert set(who_answered(versions, {})) == {"stable", "candidate"}  # the split: 4 to 1, interleaved
    splitter.set_weight(0)
    splitter.set_header_route("preview", {})
    assert who_answered(versions, {"X-Preview": "1"}) == ["stable"] * REQUESTS


def test_setting_a_route_again_replaces_it(versions: dict[str, Any]) -> None:
    splitter: CaddySplitter = versions["splitter"]
    splitter.set_header_route("preview", {"X-Preview": HeaderMatch("X-Preview", "exact", "1").pattern()})
    splitter.set_header_route("preview", {"X-Tester": HeaderMatch("X-Tester", "prefix", "qa-").pattern()})
    assert who_answered(versions, {"X-Preview": "1"}) == ["stable"] * REQUESTS
    assert who_answered(versions, {"X-Tester": "qa-ana"}) == ["candidate"] * REQUESTS
    splitter.set_header_route("preview", {})
