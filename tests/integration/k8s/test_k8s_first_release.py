"""An environment's first release needs no stable version; the second on compares with stable.

- Argo Rollouts promotes a Rollout's first ReplicaSet at once, whether its pods run or not, skipping the
  canary steps (argo-rollouts rollout/sync.go, shouldFullPromote: "Initial deploy") and the blue-green
  pre-promotion analysis (rollout/analysis.go: no active selector yet). So an overlay without a release
  renders no workload (a placeholder Rollout would become the stable ReplicaSet), and the first real
  release is judged by an Argo CD PostSync hook (argo-cd docs "Resource Hooks"): an AnalysisRun with the
  smoke test and the absolute bounds only, none of which needs a stable series.
- Argo CD rates an AnalysisRun Healthy when Successful, Degraded when Failed or Error, Unknown when
  Inconclusive (argo-cd resource_customizations/argoproj.io/AnalysisRun/health.lua), and a hook that is
  Degraded or Unknown fails the sync operation (gitops-engine pkg/sync/sync_context.go,
  getOperationPhase): the follower then sees operationState.phase Failed and CD reverts.
"""

import re

import pytest

from pipeline.config import load_config
from pipeline.deploy import validate as kv
from pipeline.deploy.analysis_load import sends_load
from pipeline.rollout.plan import plan
from tests.integration.k8s.released import ROOT, build_overlay
from tests.integration.k8s.test_k8s_validate_overlays import ENVS, needs_kustomize, needs_schemas

NEEDS_STABLE = ("-vs-stable", "positive-rate-delta", "score-psi")


def _run(env: str) -> dict[str, object]:
    (run,) = [d for d in build_overlay(env, "first") if d["kind"] == "AnalysisRun"]
    return run


@needs_kustomize
@pytest.mark.parametrize("env", ENVS)
def test_the_first_release_is_judged_by_a_post_sync_run_that_needs_no_stable(env: str) -> None:
    config = load_config(env, ROOT / "environments")
    run = _run(env)
    metadata = run["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["annotations"] == {
        "argocd.argoproj.io/hook": "PostSync",
        "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
    }
    spec = run["spec"]
    assert isinstance(spec, dict)
    names = [m["name"] for m in spec["metrics"]]
    assert names[0] == "smoke" and "error-ratio" in names and "p95-ms" in names
    assert not [name for name in names if name.endswith(NEEDS_STABLE)]
    assert ("load" in names) == sends_load(config, plan(config))
    text = str(run)
    assert (
        "stable-hash" not in text and "canary-hash" not in text and "rollouts_pod_template_hash" not in text
    )
    given = {arg["name"] for arg in spec["args"] if "value" in arg}
    assert set(re.findall(r"\{\{args\.([a-z-]+)\}\}", text)) <= given
    smoke = spec["metrics"][0]
    assert smoke["provider"]["web"]["url"] == "http://model-service-stable.{{args.namespace}}.svc/readyz"
    for metric in spec["metrics"]:
        if "prometheus" in metric["provider"]:
            assert metric["inconclusiveLimit"] < metric["count"]
            assert 'namespace="{{args.namespace}}"' in metric["provider"]["prometheus"]["query"]


@needs_kustomize
@pytest.mark.parametrize("env", ENVS)
def test_from_the_second_release_on_the_analysis_compares_with_stable(env: str) -> None:
    docs = build_overlay(env, "second")
    assert not [d for d in docs if d["kind"] == "AnalysisRun"]
    (template,) = [d for d in docs if d["metadata"]["name"] == "model-service-analysis"]
    names = {m["name"] for m in template["spec"]["metrics"]}
    assert any(name.endswith(NEEDS_STABLE) for name in names)
    (rollout,) = [d for d in docs if d["kind"] == "Rollout"]
    strategy = rollout["spec"]["strategy"]
    analysed = [s for s in strategy.get("canary", {}).get("steps", []) if "analysis" in s] or [
        strategy.get("blueGreen", {}).get("prePromotionAnalysis")
    ]
    assert all(analysed) and analysed


@needs_kustomize
@pytest.mark.parametrize("env", ENVS)
def test_an_unreleased_overlay_renders_no_workload_so_its_application_can_be_applied_any_time(
    env: str,
) -> None:
    docs = build_overlay(env, "unreleased")
    assert not {d["kind"] for d in docs} & {"Rollout", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert "unreleased" not in str(docs)  # no image reference to a tag that does not exist


@needs_kustomize
@needs_schemas
def test_a_broken_analysis_run_is_named() -> None:
    run = _run("dev")
    spec = run["spec"]
    assert isinstance(spec, dict)
    spec["retries"] = 3
    spec["metrics"][1]["successCondition"] = 5
    fields = {(p.obj, p.field) for p in kv.validate_crd(run, "dev", kv.ensure_schemas(ROOT))}
    assert ("AnalysisRun/model-service-first-release", "spec.retries") in fields
    assert ("AnalysisRun/model-service-first-release", "spec.metrics.1.successCondition") in fields
