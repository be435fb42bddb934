"""A sync during a canary keeps the weights the Gateway API plugin set; a changed backend still syncs.

Argo CD's rules, encoded offline (argoproj/argo-cd at 37ee0097):

- diff: each `ignoreDifferences.jqPathExpressions` entry is run as `del(EXPR)` on both the live and the
  desired object before they are compared (`util/argo/normalizers/diff_normalizer.go`); a resource whose
  normalized objects are equal is Synced, and an automated sync (selfHeal) starts only when one is not;
- sync: every resource is applied unless `ApplyOutOfSyncOnly=true`, which drops the apply of a resource
  that is not modified (`gitops-engine/pkg/sync/sync_context.go`, `filterOutOfSyncTasks`; docs
  "Sync Options" > "Apply Resources OutOfSync Only");
- `RespectIgnoreDifferences=true` applies the desired object patched with the merge patch from the
  normalized live object to the live one (`controller/sync.go`, `normalizeTargetResources`): a list is
  one value in that patch and `restoreNonIgnoredFields` walks maps only, so the whole live `rules` list
  replaces the desired one and a changed backend is never applied (argoproj/argo-cd#25284);
- the plugin sets weights by an Update of the route (rollouts-plugin-trafficrouter-gatewayapi
  `pkg/plugin/httproute.go`) on each reconcile of a canary step.

The rendered Application (`ApplyOutOfSyncOnly=true`, weights ignored in the diff, no
RespectIgnoreDifferences) must keep the plugin's weights through a sync and still apply a renamed backend;
the two other designs are shown failing one of the two, so the model is not vacuous."""

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import known_environments, load_config
from pipeline.deploy import argocd
from pipeline.deploy import validate as kv

ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = ROOT / "environments"
GATEWAY_ENVS = [
    env
    for env in known_environments(CONFIG_DIR)
    if load_config(env, CONFIG_DIR).deploy.traffic_router == "gateway-api"
]
ROUTE = ("gateway.networking.k8s.io", "HTTPRoute")


def _delete(node: Any, keys: list[str]) -> None:
    """`del(.a.b[].c)` for the path forms the Application uses (keys, `[]` over a list)."""
    if not keys or node is None:
        return
    key, rest = keys[0], keys[1:]
    if key.endswith("[]"):
        for item in (node.get(key[:-2]) or []) if isinstance(node, dict) else []:
            _delete(item, rest)
    elif isinstance(node, dict) and key in node:
        if rest:
            _delete(node[key], rest)
        else:
            del node[key]


def _normalize(obj: dict[str, Any], app: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    for rule in app["spec"].get("ignoreDifferences", []):
        if (rule["group"], rule["kind"]) == (obj["apiVersion"].split("/")[0], obj["kind"]):
            for expr in rule.get("jqPathExpressions", []):
                assert expr.startswith("."), expr
                path, _, selected = expr.partition(" | ")
                if selected:
                    _delete_selected(out, path[1:].split("."), selected)
                else:
                    _delete(out, path[1:].split("."))
    return out


SELECT = re.compile(r'^select\(\.(\w+) == "([^"]*)"\)$')


def _delete_selected(node: Any, keys: list[str], selected: str) -> None:
    """`del(.a.b[] | select(.key == "value"))`: the list's items whose `key` is `value` are dropped."""
    match = SELECT.match(selected)
    assert match is not None, selected
    key, value = match.groups()
    *parents, last = keys
    assert last.endswith("[]"), keys
    for name in parents:
        node = node.get(name, {})
    items = node.get(last[:-2])
    if items is not None:
        node[last[:-2]] = [item for item in items if item.get(key) != value]


def _modified(desired: dict[str, Any], live: dict[str, Any], app: dict[str, Any]) -> bool:
    return bool(_normalize(desired, app)["spec"] != _normalize(live, app)["spec"])


def _merge_patch(original: Any, modified: Any) -> Any:
    """RFC 7386 patch from `original` to `modified`: maps recurse, anything else (a list) is replaced."""
    if not (isinstance(original, dict) and isinstance(modified, dict)):
        return modified
    return {
        key: _merge_patch(original.get(key), value)
        for key, value in modified.items()
        if key not in original or original[key] != value
    }


def _apply_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target)
    for key, value in patch.items():
        out[key] = _apply_merge(out.get(key), value)
    return out


def _restore_non_ignored(
    patched: dict[str, Any], original: dict[str, Any], normalized: dict[str, Any]
) -> None:
    for key, value in original.items():
        if (
            isinstance(value, dict)
            and isinstance(patched.get(key), dict)
            and isinstance(normalized.get(key), dict)
        ):
            _restore_non_ignored(patched[key], value, normalized[key])
        elif key in normalized and normalized[key] == value and patched.get(key) != value:
            patched[key] = value


def sync(app: dict[str, Any], desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """The route after one sync operation of `app` (a client-side apply replaces the atomic `rules`)."""
    options = app["spec"]["syncPolicy"].get("syncOptions", [])
    if "ApplyOutOfSyncOnly=true" in options and not _modified(desired, live, app):
        return live
    applied = desired
    if "RespectIgnoreDifferences=true" in options:
        normalized_target = _normalize(desired, app)
        applied = _apply_merge(normalized_target, _merge_patch(_normalize(live, app), live))
        _restore_non_ignored(applied, desired, normalized_target)
    return copy.deepcopy(applied)


def _route(env: str) -> dict[str, Any]:
    docs = kv.build(ROOT / "k8s/overlays" / env)
    return next(d for d in docs if (d["apiVersion"].split("/")[0], d["kind"]) == ROUTE)


def _app(env: str) -> dict[str, Any]:
    app: dict[str, Any] = yaml.safe_load((ROOT / "k8s/argocd" / f"{env}.yaml").read_text(encoding="utf-8"))
    assert app == argocd.application(load_config(env, CONFIG_DIR))
    return app


def _weights(route: dict[str, Any]) -> list[int]:
    return [ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]]


def _mid_canary(route: dict[str, Any]) -> dict[str, Any]:
    live = copy.deepcopy(route)
    for ref, weight in zip(live["spec"]["rules"][0]["backendRefs"], (75, 25), strict=True):
        ref["weight"] = weight  # what the plugin's Update wrote at setWeight 25
    return live


needs_kubectl = pytest.mark.skipif(
    not (shutil.which("kubectl") or shutil.which("kustomize")),
    reason="neither kustomize nor kubectl on PATH",
)


@needs_kubectl
@pytest.mark.parametrize("env", GATEWAY_ENVS)
def test_a_sync_during_a_canary_keeps_the_plugins_weights(env: str) -> None:
    app, desired = _app(env), _route(env)
    live = _mid_canary(desired)
    assert not _modified(desired, live, app), "the route must be Synced mid-canary (no self-heal)"
    assert _weights(sync(app, desired, live)) == [75, 25]


@needs_kubectl
@pytest.mark.parametrize("env", GATEWAY_ENVS)
def test_a_changed_backend_still_syncs(env: str) -> None:
    app, route = _app(env), _route(env)
    live = _mid_canary(route)
    desired = copy.deepcopy(route)
    desired["spec"]["rules"][0]["backendRefs"][0]["port"] = 8080
    desired["spec"]["rules"][0]["backendRefs"][1]["name"] = "model-service-canary-v2"
    assert _modified(desired, live, app)
    after = sync(app, desired, live)
    assert after["spec"]["rules"] == desired["spec"]["rules"]
    # at rest (weights back to 100/0) the change is applied too
    assert sync(app, desired, copy.deepcopy(route))["spec"]["rules"] == desired["spec"]["rules"]


@needs_kubectl
def test_the_other_designs_fail_one_rule() -> None:
    env = GATEWAY_ENVS[0]
    app, route = _app(env), _route(env)
    live = _mid_canary(route)
    apply_all = copy.deepcopy(app)
    apply_all["spec"]["syncPolicy"]["syncOptions"].remove("ApplyOutOfSyncOnly=true")
    assert _weights(sync(apply_all, route, live)) == [100, 0], "a plain sync resets the canary to 100/0"
    respect = copy.deepcopy(apply_all)
    respect["spec"]["syncPolicy"]["syncOptions"].append("RespectIgnoreDifferences=true")
    assert _weights(sync(respect, route, live)) == [75, 25]
    renamed = copy.deepcopy(route)
    renamed["spec"]["rules"][0]["backendRefs"][1]["name"] = "model-service-canary-v2"
    frozen = sync(respect, renamed, live)
    assert frozen["spec"]["rules"][0]["backendRefs"][1]["name"] == "model-service-canary", "argo-cd#25284"


def _mid_shadow(route: dict[str, Any]) -> dict[str, Any]:
    """What the plugin's setMirrorRoute wrote (its default filter mode: on the weighted rule)."""
    live = copy.deepcopy(route)
    mirror = {"name": "model-service-canary", "port": 80, "group": "", "kind": "Service"}
    live["spec"]["rules"][0]["filters"] = [
        {"type": "RequestMirror", "requestMirror": {"backendRef": mirror, "percent": 100}}
    ]
    return live


@needs_kubectl
def test_a_sync_during_the_shadow_step_keeps_the_mirror() -> None:
    """dev mirrors (shadow.enabled): the plugin's filter leaves the route Synced and survives a sync."""
    app, desired = _app("dev"), _route("dev")
    live = _mid_shadow(desired)
    assert not _modified(desired, live, app)
    assert sync(app, desired, live)["spec"]["rules"][0]["filters"][0]["type"] == "RequestMirror"


@needs_kubectl
def test_a_sync_during_a_header_route_keeps_its_rule() -> None:
    """A header route is a rule the plugin appends, named after the route (header-based-routing.md)."""
    config = load_config(
        "dev",
        CONFIG_DIR,
        [
            (
                "rollout.steps=[{set_header_route: {name: preview, match: [{header: X-Preview, "
                "value: {exact: '1'}}]}}, {set_weight: 20}, {analysis: {}}]"
            )
        ],
    )
    app, desired = argocd.application(config), _route("dev")
    live = copy.deepcopy(desired)
    header_rule = copy.deepcopy(live["spec"]["rules"][0])
    header_rule["name"] = "preview"
    header_rule["matches"][0]["headers"] = [{"name": "X-Preview", "type": "Exact", "value": "1"}]
    live["spec"]["rules"].append(header_rule)
    assert not _modified(desired, live, app)
    assert sync(app, desired, live)["spec"]["rules"][-1]["name"] == "preview"
    renamed = copy.deepcopy(header_rule)
    renamed["name"] = "another"
    live["spec"]["rules"][-1] = renamed
    assert _modified(desired, live, app), "a rule no header route of the plan names is a difference"
