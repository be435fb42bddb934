"""What Argo CD and CD's deploy identity are given per environment: the Application that syncs
k8s/overlays/<env>, and the least-privilege ServiceAccount and Roles the CD job follows a rollout with
(k8s/argocd/<env>.yaml and k8s/deployer/<env>.yaml, written by render)."""

from __future__ import annotations

from typing import Any

from pipeline.config import Config
from pipeline.deploy import shadow
from pipeline.deploy.names import APP, K8S_DIR
from pipeline.rollout.plan import header_routes, plan


def managed_route_paths(config: Config) -> list[str]:
    """What the Gateway API plugin adds to the route while a rollout runs, left out of the diff like the
    weights: the shadow step's RequestMirror filter (the plugin's default mode puts it on the weighted rule)
    and each header route's rule (named after the route). Argo removes them when the rollout ends."""
    paths = [".spec.rules[].filters"] if shadow.in_cluster(config) else []
    return paths + [f'.spec.rules[] | select(.name == "{name}")' for name in header_routes(plan(config))]


def application(config: Config) -> dict[str, Any]:
    """The Argo CD Application of the environment: automated sync, or manual (CD's rollout step starts the sync)."""
    argocd = config.deploy.argocd
    sync: dict[str, Any] = {}
    if argocd.automated:
        sync["automated"] = {"prune": True, "selfHeal": True}
    sync["syncOptions"] = ["CreateNamespace=true"]
    spec: dict[str, Any] = {}
    if config.deploy.traffic_router == "gateway-api":
        # The plugin writes the backends' weights during a canary. Ignored in the diff, the route stays
        # Synced (no self-heal); ApplyOutOfSyncOnly keeps a sync (a later commit) from applying Git's 100/0
        # over them, while a route that really changed (a backend renamed) is OutOfSync and applied.
        # Not RespectIgnoreDifferences: it copies the live `rules` list whole into what is applied, so a
        # changed backend would never sync (argoproj/argo-cd#25284; docs/kubernetes.md says more).
        sync["syncOptions"].append("ApplyOutOfSyncOnly=true")
        spec["ignoreDifferences"] = [
            {
                "group": "gateway.networking.k8s.io",
                "kind": "HTTPRoute",
                "jqPathExpressions": [".spec.rules[].backendRefs[].weight", *managed_route_paths(config)],
            }
        ]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": f"{APP}-{config.name}",
            "namespace": argocd.namespace,
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        },
        "spec": {
            "project": argocd.project,
            "source": {
                "repoURL": argocd.repo_url,
                "targetRevision": config.deploy.gitops.branch,
                "path": f"{K8S_DIR}/overlays/{config.name}",
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": config.deploy.namespace},
            "syncPolicy": sync,
            **spec,
        },
    }


def deployer(config: Config) -> list[dict[str, Any]]:
    """The CD deploy identity of the environment, least privilege: a ServiceAccount in Argo CD's namespace
    that may read the environment's Application and patch it (to start a sync at the pushed revision),
    and read the Rollout and its AnalysisRuns in the environment's namespace (what the follower reads).
    Nothing else: no Secrets, no writes to the workload."""
    argocd, namespace = config.deploy.argocd.namespace, config.deploy.namespace
    name = f"{APP}-cd-{config.name}"
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": argocd}]

    def role(where: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        meta = {"name": name, "namespace": where}
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        return [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": rules},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta,
                "roleRef": ref,
                "subjects": subject,
            },
        ]

    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": argocd}},
        # The environment's namespace, so the RoleBinding below can exist before Argo CD's first sync.
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        *role(
            argocd,
            [
                {
                    "apiGroups": ["argoproj.io"],
                    "resources": ["applications"],
                    "resourceNames": [f"{APP}-{config.name}"],
                    "verbs": ["get", "watch", "patch"],
                }
            ],
        ),
        *role(
            namespace,
            [
                {
                    "apiGroups": ["argoproj.io"],
                    "resources": ["rollouts", "analysisruns"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        ),
    ]
