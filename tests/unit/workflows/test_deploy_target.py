"""scripts/deploy_target.py, the deploy job's "Where to deploy": each configuration of an environment
gives its step outputs, notice or error; a cluster's kubeconfig is written private and its context
selected with the real kubectl."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from tests._workflows import load_script

deploy_target = load_script("deploy_target")

DIGEST = "r.example/o/m@sha256:" + "0" * 64
KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- {name: a, cluster: {server: "https://127.0.0.1:6443"}}
- {name: b, cluster: {server: "https://127.0.0.1:6444"}}
users:
- {name: deployer, user: {token: t0ken}}
contexts:
- {name: ctx-a, context: {cluster: a, user: deployer}}
- {name: ctx-b, context: {cluster: b, user: deployer}}
current-context: ctx-a"""


def _run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], **values: str
) -> tuple[int, dict[str, str], str]:
    """main() in a runner-like environment; (exit code, step outputs, what it printed)."""
    output, env_file = tmp_path / "output", tmp_path / "env"
    output.touch()
    env_file.touch()
    environ = {
        "TARGET_ENV": "staging",
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_ENV": str(env_file),
        **values,
    }
    code = deploy_target.main(environ)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return code, outputs, capsys.readouterr().out


def test_under_act_nothing_follows_a_cluster_and_gitops_commits_only_a_pushed_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, outputs, printed = _run(tmp_path, capsys, ACT="true", IMAGE_DIGEST=DIGEST, KUBE_CONFIG="x")
    assert (code, outputs) == (0, {"cluster": "false", "gitops": "true"})
    assert printed == "::notice title=rollout skipped::act runs this workflow on a laptop - no cluster here\n"
    code, outputs, _ = _run(tmp_path, capsys, ACT="true")
    assert (code, outputs) == (0, {"cluster": "false", "gitops": "false"})


def test_without_a_cluster_the_alias_moves_and_a_notice_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, outputs, printed = _run(tmp_path, capsys, IMAGE_DIGEST=DIGEST, GITOPS_TOKEN="t")
    assert (code, outputs) == (0, {"cluster": "false", "gitops": "false"})
    assert printed.startswith("::notice title=rollout skipped::no cluster for staging - set the environment ")
    assert (tmp_path / "env").read_text() == "" and not (tmp_path / "kubeconfig").exists()


def test_a_cluster_name_without_its_kubeconfig_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, outputs, printed = _run(tmp_path, capsys, KUBE_CLUSTER="ctx-b", IMAGE_DIGEST=DIGEST)
    assert (code, outputs) == (1, {})
    assert printed == (
        "::error::KUBE_CLUSTER is set for staging but the secret KUBE_CONFIG is not: set it in the "
        "environment staging (docs/ci.md)\n"
    )


@pytest.mark.parametrize(
    ("values", "missing"),
    [
        ({}, "or GITOPS_TOKEN IMAGE_REGISTRY (variable: no image was pushed)"),
        # An App needs its id and its key; the image is there.
        ({"GITOPS_APP_ID": "1", "IMAGE_DIGEST": DIGEST}, "or GITOPS_TOKEN (docs/ci.md)"),
        ({"GITOPS_TOKEN": "t"}, "missing: IMAGE_REGISTRY (variable: no image was pushed) (docs/ci.md)"),
    ],
)
def test_a_cluster_without_a_push_credential_or_an_image_fails_naming_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], values: dict[str, str], missing: str
) -> None:
    code, outputs, printed = _run(tmp_path, capsys, KUBE_CONFIG=KUBECONFIG, **values)
    assert (code, outputs) == (1, {})
    assert printed.startswith(
        "::error::staging has a cluster (KUBE_CONFIG) but nothing can be deployed to it"
    )
    assert missing in printed
    assert not (tmp_path / "kubeconfig").exists()


needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl on PATH")


@needs_kubectl
@pytest.mark.parametrize(
    "credential", [{"GITOPS_TOKEN": "t"}, {"GITOPS_APP_ID": "1", "GITOPS_APP_PRIVATE_KEY": "k"}]
)
def test_a_cluster_gets_a_private_kubeconfig_with_the_chosen_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], credential: dict[str, str]
) -> None:
    code, outputs, printed = _run(
        tmp_path, capsys, KUBE_CONFIG=KUBECONFIG, KUBE_CLUSTER="ctx-b", IMAGE_DIGEST=DIGEST, **credential
    )
    assert (code, outputs, printed) == (0, {"cluster": "true", "gitops": "true"}, "")
    kubeconfig = tmp_path / "kubeconfig"
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert (tmp_path / "env").read_text() == f"KUBECONFIG={kubeconfig}\n"
    assert "current-context: ctx-b" in kubeconfig.read_text()


@needs_kubectl
def test_a_cluster_name_that_is_not_a_context_of_the_kubeconfig_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, outputs, printed = _run(
        tmp_path, capsys, KUBE_CONFIG=KUBECONFIG, KUBE_CLUSTER="ctx-c", IMAGE_DIGEST=DIGEST, GITOPS_TOKEN="t"
    )
    assert (code, outputs) == (1, {})
    assert printed.startswith("::error::KUBE_CLUSTER=ctx-c is not a context of the KUBE_CONFIG of staging: ")
    assert "ctx-c" in printed.split(": ", 1)[1]


def test_without_a_cluster_name_the_kubeconfig_keeps_its_current_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, outputs, _ = _run(tmp_path, capsys, KUBE_CONFIG=KUBECONFIG, IMAGE_DIGEST=DIGEST, GITOPS_TOKEN="t")
    assert (code, outputs) == (0, {"cluster": "true", "gitops": "true"})
    assert (tmp_path / "kubeconfig").read_text() == KUBECONFIG + "\n"
