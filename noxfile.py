# /// script
# dependencies = ["nox>=2025.2.9"]
# ///
"""Nox sessions: the one entry point for people, CI and release tooling.

Sessions orchestrate and hold no logic: each stage session is a thin call of
`python -m pipeline STAGE`, and anything after `--` is passed on (default environment: dev).
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"  # default=, tags= and nox.project.dependency_groups
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]  # hermetic and fast; nothing here touches a cluster

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = "3.11"


def _install(session: nox.Session, *groups: str) -> None:
    deps = [dep for group in groups for dep in nox.project.dependency_groups(PYPROJECT, group)]
    session.install("-e.", *deps)


def _files(pattern: str) -> list[str]:
    return sorted(str(path) for path in Path().glob(pattern))


def _stage(session: nox.Session, stage: str) -> None:
    _install(session, "stages", *STAGE_EXTRAS.get(stage, ()))
    session.run("python", "-m", "pipeline", stage, *session.posargs)


# -- Development -----------------------------------------------------------------------------------


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Lint and type-check code and tests, the Dockerfile, the workflows; generated files and k8s/ current."""
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("hadolint", "model_service/Dockerfile")
    session.run("python", "-m", "pipeline", "schema", "--check")
    session.run("python", "-m", "pipeline", "render", "--check")  # overlays current and valid, offline
    # Workflows: security (zizmor), structure (schema), and a pin + act stand-in for every action.
    session.run("zizmor", "--offline", ".github/workflows", ".github/actions")
    session.run(
        "check-jsonschema", "--builtin-schema", "vendor.github-workflows", *_files(".github/workflows/*.yml")
    )
    session.run("python", "scripts/run_act.py", "--check")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and fast integration tests, a few minutes; tests marked slow are left out (pytest args after `--`)."""
    _install(session, "test")
    session.run("pytest", "-m", "not slow", *(session.posargs or ["tests"]))


@nox.session(python=PYTHON, name="tests-full", default=False)
def tests_full(session: nox.Session) -> None:
    """Every test: also act, the image build, Chromium, the benchmark and whole-pipeline runs (what CI runs)."""
    _install(session, "test")
    session.run("pytest", *(session.posargs or ["tests"]))


# -- Pipeline stages (each takes `-- --env ENV`, default dev) ------------------------------------

STAGES = {  # one line per stage of pipeline/stages/__init__.py's table: `nox -s NAME` runs it
    "train": "Train the model and log the run to MLflow.",
    "export": "Export to ONNX with a parity gate; write the model card.",
    "gate": "Gate the candidate's metrics: absolute bounds and against the version serving ENV.",
    "register": "Register the exported model in MLflow; alias ENV-candidate.",
    "image": "Build the service image with the model baked in, smoke-test it, push it when configured.",
    "loadtest": "Load-test the service with the exported model; gate on the SLOs (`-- --host URL` for a running one).",
    "shadow": "Mirror live traffic to the candidate while users get stable's answers; gate on the paired answers.",
    "rollout": "Rehearse ENV's rollout plan locally: Caddy, live Locust traffic, analysis; promote or roll back.",
    "promote": "Move alias ENV to the candidate whose gate passed (`-- --to-version N` for a given one).",
    "rollback": "Move alias ENV back to the version that served before (`-- --gitops`: revert the overlay too).",
    "freeze": "Freeze promotions into ENV (`-- --reason TEXT`) until `-- --lift`: a registry tag, no commit.",
    "drift": "Input drift and score shift vs the model card's reference (`-- --input FILE` or `-- --url URL`).",
    "feedback": "Import labels for captured requests (`-- --labels FILE`: CSV or Parquet of request_id, label).",
    "evaluate": "Live quality of what ENV served: captured rows + labels judged by the gate rows; CBPE estimate.",
    "batch": "Score a table with the release serving ENV (`-- --input PATH --output PATH [--engine spark]`).",
    "monitor": "Check the release serving ENV as monitor.yml does: drift and live quality (evaluate).",
    "serve": "Serve the model of ENV (its alias, else the current export) on 127.0.0.1:8000 until Ctrl-C.",
}

STAGE_EXTRAS = {"batch": ("batch-spark",), "register": ("signing",)}
"""Dependency groups a stage needs beyond `stages` (the Spark engine: pyspark; keyless signing: sigstore)."""


def _stage_session(name: str, doc: str) -> None:
    def run_stage(session: nox.Session) -> None:
        _stage(session, name)

    run_stage.__doc__ = doc
    nox.session(run_stage, name=name, python=PYTHON, default=False, reuse_venv=True, tags=["stage"])


for _name, _doc in STAGES.items():
    _stage_session(_name, _doc)


@nox.session(python=PYTHON, default=False, reuse_venv=True)
def init(session: nox.Session) -> None:
    """Make a fork ship your model: `-- --name NAME [--csv PATH --target COL] [--task T]` (docs/bring-your-model.md)."""
    _stage(session, "init")


@nox.session(python=PYTHON, default=False, reuse_venv=True)
def render(session: nox.Session) -> None:
    """Render k8s/overlays and k8s/argocd from environments/*.yaml (`-- --check`: fail on drift, validate)."""
    _stage(session, "render")


@nox.session(python=PYTHON, default=False, reuse_venv=True)
def pipeline(session: nox.Session) -> None:
    """Run every stage in order for ENV (default dev), stopping at the first failed gate."""
    _stage(session, "run")


@nox.session(python=PYTHON, default=False, reuse_venv=True)
def bench(session: nox.Session) -> None:
    """Benchmark the service against its peers with wrk, side by side (`-- --quick` for a short run).

    KServe, MLServer, BentoML and LitServe are installed by the bench into venvs of their own
    (.nox/bench-<server>, from the pyproject groups bench-<server>)."""
    _install(session, "stages", "bench")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON, default=False)
def soak(session: nox.Session) -> None:
    """Mixed traffic with headroom and slow clients against one service for 10 minutes (`-- --minutes N`):
    RSS and open descriptors flat, no server error, shed 503s rare and each explained by CPU contention."""
    _install(session, "stages", "bench")
    session.run("python", "-m", "benchmarks.soak", *session.posargs)


@nox.session(python=PYTHON, default=False)
def act(session: nox.Session) -> None:
    """Run the GitHub workflows here with act, offline: `-- --event push|pull_request|workflow_dispatch`."""
    _install(session, "workflows")
    session.run("python", "scripts/run_act.py", *session.posargs, external=False)
