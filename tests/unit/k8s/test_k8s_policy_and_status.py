"""Policy checks, release lineage from registry tags, and Rollout status interpretation (pure)."""

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import load_config
from pipeline.deploy.argo import interpret
from pipeline.deploy.gitops import lineage_from_tags
from pipeline.deploy.validate import Problem, policy
from pipeline.errors import StageError

ROOT = Path(__file__).resolve().parents[3]
ROLLOUT = yaml.safe_load((ROOT / "k8s/base/rollout.yaml").read_text())
ROLLOUT["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/acme/model@sha256:" + "a" * 64


def test_the_base_rollout_passes_the_policy() -> None:
    assert policy(ROLLOUT, "base") == []


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("readOnlyRootFilesystem", False, "must be true"),
        ("allowPrivilegeEscalation", True, "must be false"),
        ("capabilities", {"drop": ["NET_RAW"]}, "must include ALL"),
    ],
)
def test_a_weakened_container_fails_naming_object_field_and_reason(
    field: str, value: object, reason: str
) -> None:
    doc = copy.deepcopy(ROLLOUT)
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"][field] = value
    (problem,) = policy(doc, "k8s/overlays/dev")
    assert problem.obj == "Rollout/model-service"
    assert field in problem.field and problem.reason == reason
    assert str(problem).startswith("k8s/overlays/dev: Rollout/model-service: spec.template.spec.containers.0")


def test_latest_tags_missing_limits_probes_replicas_and_removed_apis_fail() -> None:
    doc = copy.deepcopy(ROLLOUT)
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "model-service:latest"
    del container["resources"]["limits"]
    del container["readinessProbe"]
    doc["spec"]["replicas"] = 3
    fields = {p.field.rsplit(".", 1)[-1] for p in policy(doc, "x")}
    assert {"image", "cpu", "memory", "readinessProbe", "replicas"} <= fields
    removed = {"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"}}
    assert policy(removed, "x") == [
        Problem("x", "PodDisruptionBudget/p", "apiVersion", "policy/v1beta1 was removed in Kubernetes 1.25")
    ]


def test_lineage_reads_a_digest_or_a_tag_and_prod_requires_a_digest() -> None:
    dev, prod = load_config("dev", ROOT / "environments"), load_config("prod", ROOT / "environments")
    tags = {"image": "sha256:" + "b" * 64, "git_sha": "abc", "gate.dev": "pass", "loadtest.dev": "pass"}
    lineage = lineage_from_tags(dev, "3", tags)
    assert (lineage.digest, lineage.gate, lineage.loadtest) == ("sha256:" + "b" * 64, "pass", "pass")
    tagged = lineage_from_tags(dev, "3", {"image": "reg.local:5000/model-service:abc-v3"})
    assert (tagged.image, tagged.tag, tagged.digest) == ("reg.local:5000/model-service", "abc-v3", None)
    with pytest.raises(StageError, match="require_digest"):
        lineage_from_tags(prod, "3", {"image": "model-service:abc-v3"})
    with pytest.raises(StageError, match="pipeline image --env dev"):
        lineage_from_tags(dev, "3", {})


def test_require_digest_reads_the_pushed_digest_tag_not_the_image_tag() -> None:
    prod = load_config("prod", ROOT / "environments")
    pushed = "reg.local:5000/model-service@sha256:" + "e" * 64
    tags = {"image": "reg.local:5000/model-service:abc-v3", "image_digest": pushed, "gate.prod": "pass"}
    lineage = lineage_from_tags(prod, "3", tags)
    assert (lineage.image, lineage.digest) == ("reg.local:5000/model-service", "sha256:" + "e" * 64)


STEPS = {"strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]}}}


@pytest.mark.parametrize(
    ("status", "phase", "done", "ok"),
    [
        (
            {"phase": "Progressing", "currentStepIndex": 1, "observedGeneration": "2"},
            "Progressing",
            False,
            False,
        ),
        ({"phase": "Paused", "currentStepIndex": 2, "observedGeneration": "2"}, "Paused", False, False),
        ({"phase": "Healthy", "currentStepIndex": 3, "observedGeneration": "2"}, "Healthy", True, True),
        (
            {"phase": "Degraded", "message": "RolloutAborted: metric error-ratio failed", "abort": True},
            "Aborted",
            True,
            False,
        ),
        ({"phase": "Healthy", "observedGeneration": "1"}, "Progressing", False, False),  # old spec's health
    ],
)
def test_rollout_status_interpretation(status: dict[str, Any], phase: str, done: bool, ok: bool) -> None:
    state = interpret({"metadata": {"generation": 2}, "spec": STEPS, "status": status})
    assert (state.phase, state.done, state.ok) == (phase, done, ok)
    assert state.step.endswith("/3")
