"""release/evidence, the one check the deploy branch's ruleset requires, and the stand-in's reading of
CODEOWNERS (the last matching line wins, as GitHub's "About code owners" says)."""

from tests._github_api import owners_of
from tests._workflows import load_script

evidence = load_script("release_evidence")
PASSED = {context: {"state": "success"} for context in evidence.EVIDENCE}


def test_a_pull_request_without_a_release_passes() -> None:
    assert evidence.verdict(["pipeline/cli.py", "k8s/overlays/prod/patch-hpa.yaml"], {}) == (
        "success",
        "no release in this pull request",
    )


def test_a_release_passes_only_with_every_evidence_status_successful() -> None:
    files = ["k8s/overlays/prod/release.yaml"]
    assert evidence.verdict(files, PASSED)[0] == "success"
    missing = {k: v for k, v in PASSED.items() if k != "release/canary"}
    assert evidence.verdict(files, missing) == (
        "failure",
        "release/canary is missing: open release pull requests with `promote --gitops`",
    )
    failed = {**PASSED, "release/soak": {"state": "failure", "description": "served staging 2.0 h of 24 h"}}
    assert evidence.verdict(files, failed) == (
        "failure",
        "release/soak is failure: served staging 2.0 h of 24 h",
    )


def test_codeowners_last_match_wins_and_anchors_folders() -> None:
    codeowners = "* @all\n/k8s/overlays/prod/ @acme/approvers\n/k8s/overlays/prod/patch-hpa.yaml\n"
    assert owners_of(codeowners, "k8s/overlays/prod/release.yaml") == ["@acme/approvers"]
    assert owners_of(codeowners, "k8s/overlays/prod/patch-hpa.yaml") == []  # no owner: unowned
    assert owners_of(codeowners, "k8s/overlays/dev/release.yaml") == ["@all"]
    assert owners_of(codeowners, "docs/k8s/overlays/prod/x") == ["@all"]  # anchored at the root
