"""Every rendered object of a CRD kind is a fixpoint of its CRD's `default:` values.

The API server fills a custom resource's absent fields from the structural schema's defaults on create
and update (Kubernetes docs, "Extend the Kubernetes API with CustomResourceDefinitions" > "Defaulting").
Argo CD's default (legacy, three-way) diff compares a CRD's lists as whole values, so an HTTPRoute whose
`parentRefs`/`backendRefs` items lack the defaulted `group`/`kind` differs from the live object after
every sync and stays OutOfSync (argoproj/argo-cd#22151). The defaults are read from the pinned CRDs."""

import pytest
import yaml

from pipeline.deploy import validate as kv
from tests.integration.k8s.released import STATES, State, build_overlay
from tests.integration.k8s.test_k8s_validate_overlays import ENVS, ROOT, needs_kustomize, needs_schemas


def _crd_objects(env: str, state: State) -> list[dict[str, object]]:
    docs = build_overlay(env, state)
    docs.append(yaml.safe_load((ROOT / "k8s/argocd" / f"{env}.yaml").read_text(encoding="utf-8")))
    return [d for d in docs if str(d["apiVersion"]).rpartition("/")[0] in kv.CRD_GROUPS]


@needs_kustomize
@needs_schemas
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("env", ENVS)
def test_defaulting_changes_no_rendered_custom_resource(env: str, state: State) -> None:
    schemas = kv.crd_schemas(kv.ensure_schemas(ROOT))
    objects = _crd_objects(env, state)
    kinds = {str(d["kind"]) for d in objects}
    assert {"AnalysisTemplate", "HTTPRoute", "ServiceMonitor", "PrometheusRule", "Application"} <= kinds
    assert ("Rollout" in kinds) == (state != "unreleased")
    for doc in objects:
        # An AnalysisRun is checked as the template whose metric schema it shares (no pinned run CRD).
        kind = "AnalysisTemplate" if doc["kind"] == "AnalysisRun" else str(doc["kind"])
        group, _, version = str(doc["apiVersion"]).rpartition("/")
        schema = schemas[(group, version, kind)]
        assert kv.apply_defaults(doc, schema) == doc, f"{env}: {doc['kind']} is not defaulted"


@needs_schemas
def test_a_missing_default_is_named_with_its_path_and_value() -> None:
    route = yaml.safe_load((ROOT / "k8s/components/gateway-api/httproute.yaml").read_text(encoding="utf-8"))
    del route["spec"]["parentRefs"][0]["kind"]
    del route["spec"]["rules"][0]["backendRefs"][1]["group"]
    problems = kv.default_problems(route, "httproute.yaml", kv.ensure_schemas(ROOT))
    assert [(p.field, p.reason.split(":")[0]) for p in problems] == [
        ("spec.parentRefs.0.kind", 'the API server defaults it to "Gateway"'),
        ("spec.rules.0.backendRefs.1.group", 'the API server defaults it to ""'),
    ]


def test_defaults_reach_list_items_and_map_values_and_the_defaults_themselves() -> None:
    schema = {
        "properties": {
            "refs": {"items": {"properties": {"kind": {"default": "Service"}}}},
            "byName": {"additionalProperties": {"properties": {"port": {"default": 80}}}},
            "tls": {"default": {}, "properties": {"mode": {"default": "Terminate"}}},
        }
    }
    value = {"refs": [{"name": "a"}], "byName": {"x": {}}}
    assert kv.apply_defaults(value, schema) == {
        "refs": [{"name": "a", "kind": "Service"}],
        "byName": {"x": {"port": 80}},
        "tls": {"mode": "Terminate"},
    }
    assert value == {"refs": [{"name": "a"}], "byName": {"x": {}}}
