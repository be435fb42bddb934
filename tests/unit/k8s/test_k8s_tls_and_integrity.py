"""`deploy.tls`, the registry's sha256 and the signature check, rendered and then validated by `render --check`
on a copy of the repository: staging behind a Gateway's HTTPS listener, prod behind ingress-nginx with a TLS
Secret, both released with the registry's sha256, prod requiring signatures (issue 36).

Gateway API: an HTTPRoute's `parentRefs[].sectionName` names a Gateway listener, and the route attaches to
that listener only (https://gateway-api.sigs.k8s.io/reference/spec/#parentreference, the CRD's own text in
gateway-api-httproutes-crd.yaml). Ingress: `spec.tls[].hosts` and `secretName`
(https://kubernetes.io/docs/concepts/services-networking/ingress/#tls)."""

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.config import ConfigError, load_config
from pipeline.console import Reporter
from pipeline.deploy import crd_cache, gitops, names, release_file
from pipeline.deploy import render as k8s
from pipeline.deploy import validate as kv
from pipeline.release.signing import public_key
from pipeline.rollout.plan import plan

ROOT = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get(kv.SCHEMAS_ENV) or crd_cache.cache_dir())
STAGED = SHARED.parent / "crds-next"
PINNED = [
    SHARED / crd.name if (SHARED / crd.name).is_file() else STAGED / crd.name for crd in crd_cache.PINNED
]
SHA256 = "c" * 64
KEY = public_key(Ed25519PrivateKey.generate())
EDITS: dict[str, dict[str, Any]] = {
    "staging": {"deploy": {"tls": {"listener": "https"}}},
    "prod": {
        "deploy": {"traffic_router": "nginx", "tls": {"secret_name": "model-prod-tls"}},
        "service": {"signatures": "required", "signing_public_keys": [KEY]},
    },
}


def _environments(root: Path, edits: dict[str, dict[str, Any]]) -> Path:
    shutil.copytree(ROOT / "environments", root / "environments")
    for env, changes in edits.items():
        path = root / "environments" / f"{env}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for section, values in changes.items():
            data[section] = {**data.get(section, {}), **values}
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return root / "environments"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    config_dir = _environments(root, EDITS)
    for folder in ("base", "components"):
        shutil.copytree(ROOT / "k8s" / folder, root / "k8s" / folder)
    release = release_file.Release(
        image="ghcr.io/acme/model-service",
        digest="sha256:" + "a" * 64,
        model_version="3",
        model_sha256=SHA256,
    )
    for env in EDITS:
        path = root / "k8s/overlays" / env / names.RELEASE_FILE
        path.parent.mkdir(parents=True)
        path.write_text(release_file.release_text(load_config(env, config_dir), release), encoding="utf-8")
    assert k8s.render(root, config_dir, check=False, reporter=Reporter())
    return root


def _objects(repo: Path, env: str) -> dict[str, dict[str, Any]]:
    """The overlay's objects by kind; the service's ConfigMap as `ConfigMap` (the others are left out)."""
    docs = kv.build(repo / "k8s/overlays" / env)
    objects = {doc["kind"]: doc for doc in docs if doc["kind"] != "ConfigMap"}
    [objects["ConfigMap"]] = [
        doc
        for doc in docs
        if doc["kind"] == "ConfigMap" and "MODEL_SERVICE_ENVIRONMENT" in doc.get("data", {})
    ]
    return objects


needs_schemas = pytest.mark.skipif(
    not all(path.is_file() for path in PINNED),
    reason=f"the pinned CRD files are not all in {SHARED} (or {STAGED}); set {kv.SCHEMAS_ENV}",
)
needs_kustomize = pytest.mark.skipif(
    not (shutil.which("kustomize") or shutil.which("kubectl")), reason="neither kustomize nor kubectl on PATH"
)


@needs_kustomize
def test_rendered_tls_sha256_and_signatures_reach_the_objects(repo: Path) -> None:
    staging, prod = _objects(repo, "staging"), _objects(repo, "prod")
    [parent] = staging["HTTPRoute"]["spec"]["parentRefs"]
    assert parent["sectionName"] == "https"
    assert prod["Ingress"]["spec"]["tls"] == [
        {"hosts": [load_config("prod", repo / "environments").deploy.host], "secretName": "model-prod-tls"}
    ]
    for objects in (staging, prod):
        env = objects["Rollout"]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "MODEL_SERVICE_EXPECTED_SHA256", "value": SHA256} in env
    assert prod["ConfigMap"]["data"]["MODEL_SERVICE_SIGNATURES"] == "required"
    assert prod["ConfigMap"]["data"]["MODEL_SERVICE_SIGNING_PUBLIC_KEYS"] == KEY
    assert "MODEL_SERVICE_SIGNATURES" not in staging["ConfigMap"]["data"]


@pytest.mark.slow  # the pinned CRDs are parsed (pure-Python YAML): 18-40 s on 2 cores
@needs_schemas
@needs_kustomize
def test_the_rendered_overlays_pass_render_check(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "crds"
    folder.mkdir()
    for path in PINNED:
        (folder / path.name).symlink_to(path)
    monkeypatch.setenv(kv.SCHEMAS_ENV, str(folder))
    for env in ("staging", "prod"):  # what `render --check` does for each overlay
        problems, skipped = kv.validate_docs(kv.build(repo / "k8s/overlays" / env), env, repo)
        assert [str(problem) for problem in problems] == []
        assert skipped == []


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        ({"tls": {"secret_name": "x"}}, "set tls.listener"),
        ({"tls": {}}, "set tls.listener"),
        ({"traffic_router": "nginx", "tls": {"listener": "https"}}, "set tls.secret_name"),
        ({"tls": {"listener": "HTTPS!"}}, "listener"),
    ],
)
def test_tls_for_the_wrong_router_is_refused_with_the_fix(
    tmp_path: Path, deploy: dict[str, Any], message: str
) -> None:
    config_dir = _environments(tmp_path, {"staging": {"deploy": deploy}})
    with pytest.raises(ConfigError, match=message):
        load_config("staging", config_dir)


def test_required_signatures_need_trusted_keys_and_off_may_be_unquoted(tmp_path: Path) -> None:
    config_dir = _environments(tmp_path, {"staging": {"service": {"signatures": "required"}}})
    with pytest.raises(ConfigError, match="needs signing_public_keys"):
        load_config("staging", config_dir)
    (config_dir / "dev.yaml").write_text("extends: base\nservice:\n  signatures: off\n", encoding="utf-8")
    assert load_config("dev", config_dir).service.signatures == "off"


def test_promote_carries_the_registrys_sha256_into_the_release_file() -> None:
    """`promote --gitops` reads the version's tags: `onnx_sha256` (set at register) becomes release.yaml's
    `model_sha256`, read back by render; a version registered before the tag existed renders no variable."""
    config = load_config("staging", ROOT / "environments")
    tags = {"image": "ghcr.io/acme/model-service:abc-3", "onnx_sha256": SHA256, "git_sha": "abc"}
    release = gitops.lineage_from_tags(config, "3", tags).release()
    assert release.model_sha256 == SHA256
    text = release_file.release_text(config, release)
    assert release_file.parse_release(text, "release.yaml") == release
    old = gitops.lineage_from_tags(config, "2", {"image": "ghcr.io/acme/model-service:abc-2"}).release()
    assert old.model_sha256 is None
    assert not [op for op in k8s.rollout_patch(config, plan(config), old) if "EXPECTED_SHA256" in str(op)]
