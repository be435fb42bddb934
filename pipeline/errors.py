"""Errors a stage raises: the CLI exits 1 on StageError, 2 on NoCluster (and on ConfigError, pipeline/config/loader.py)."""


class StageError(Exception):
    """A stage could not run or a gate failed; the message says what happened and what to do."""


class StageSkipped(Exception):
    """A stage cannot run on this machine (e.g. no Docker daemon); `run` shows it SKIPPED with the reason.

    Run alone, a skipped stage exits non-zero: it did not do its job.
    """


class NoCluster(Exception):
    """No Kubernetes cluster is reachable (no KUBECONFIG, or its API does not answer): a usage error, exit 2."""
