"""Whatever stops a rehearsal (a signal to the pipeline, to its parent, twice in a row, or SIGKILL),
every process it started stops too, no alias moves, and nothing keeps sending traffic.

Real processes: `python -m pipeline rollout` started as CI or nox would start it, signalled from here.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests._processes import command_lines

pytestmark = pytest.mark.slow  # real rollouts, signalled mid-way

MODEL = "breast-cancer-classifier"
REPO = Path(__file__).parents[3]
# A long first pause, so the signal lands while both versions, Caddy and Locust run.
LONG = ("--set", "rollout.steps=[{set_weight: 20}, {pause: {seconds: 120}}, {analysis: {}}]")
# What nox does: run the pipeline as a child and wait (its own signal handling aside).
PARENT = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
# What nox does when it gets SIGINT itself (nox/popen.py, shutdown_process): 0.3 s for the pipeline to
# end, then SIGTERM, 0.2 s more, then SIGKILL.
NOX_ON_SIGINT = """
import subprocess, sys
child = subprocess.Popen(sys.argv[1:])
try:
    sys.exit(child.wait())
except KeyboardInterrupt:
    try:
        child.wait(timeout=0.3)
    except subprocess.TimeoutExpired:
        child.terminate()
        try:
            child.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            child.kill()
    sys.exit(130)
"""


@pytest.fixture
def workspace(stable_and_candidate: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(stable_and_candidate, root, ignore=shutil.ignore_patterns("reports"))
    return root


def processes_of(workspace: Path) -> list[int]:
    """Pids of every process whose command line names the workspace: the pipeline, the services,
    Caddy and Locust."""
    return [
        pid
        for pid, cmdline in command_lines()
        if str(workspace) in cmdline and "subprocess.run" not in cmdline
    ]  # "subprocess.run": nox's stand-in, which the tests signal themselves


@pytest.fixture
def runs() -> Iterator[list[subprocess.Popen[str]]]:
    """The runs a test starts; whatever the test's outcome, none is left running or with an open pipe."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for run in started:
        if run.poll() is None:
            run.kill()
        run.communicate()


def start(
    runs: list[subprocess.Popen[str]], workspace: Path, *, parent: str | None = None
) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "rollout",
        "--env",
        "dev",
        "--workdir",
        str(workspace),
        *LONG,
    ]
    if parent is not None:
        command = [sys.executable, "-c", parent, *command]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    run = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    runs.append(run)
    return run


def wait_for_live_traffic(run: subprocess.Popen[str]) -> list[str]:
    assert run.stdout is not None
    lines = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = run.stdout.readline()
        lines.append(line)
        if "step 2: pause" in line:
            return lines
        assert line or run.poll() is None, "".join(lines)
    raise AssertionError("the rollout never reached its pause:\n" + "".join(lines))


def all_stopped(workspace: Path, timeout: float = 40) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes_of(workspace):
            return True
        time.sleep(0.5)
    return False


def serving(workspace: Path) -> str:
    uri = f"sqlite:///{workspace / '.mlflow' / 'mlflow.db'}"
    return str(
        MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(MODEL, "dev").version
    )


def test_sigkill_of_the_pipeline_stops_every_child(
    workspace: Path, runs: list[subprocess.Popen[str]]
) -> None:
    run = start(runs, workspace)
    wait_for_live_traffic(run)
    children = processes_of(workspace)
    assert len(children) >= 4  # stable, candidate, Caddy, Locust (services may have workers)
    run.kill()
    run.wait(timeout=30)
    assert all_stopped(workspace), processes_of(workspace)
    assert serving(workspace) == "1"


def test_sigterm_to_the_parent_alone_stops_the_rollout_without_promoting(
    workspace: Path, runs: list[subprocess.Popen[str]]
) -> None:
    """`timeout` and some CI runners signal only the process they started (here nox's stand-in)."""
    run = start(runs, workspace, parent=PARENT)
    wait_for_live_traffic(run)
    run.send_signal(signal.SIGTERM)  # the parent dies at once; the pipeline must notice
    assert all_stopped(workspace), processes_of(workspace)
    output = run.communicate(timeout=30)[0]
    assert "interrupted" in output, output[-2000:]
    assert serving(workspace) == "1"


def test_sigint_then_sigterm_cannot_cut_the_cleanup_short(
    workspace: Path, runs: list[subprocess.Popen[str]]
) -> None:
    """nox forwards Ctrl-C as SIGINT and follows it with SIGTERM a fraction of a second later. The SIGTERM
    is sent as soon as the first child is gone, so it lands in the cleanup whatever the machine's speed
    (after a fixed delay it may land before the cleanup or after it)."""
    run = start(runs, workspace)
    wait_for_live_traffic(run)
    children = set(processes_of(workspace)) - {run.pid}
    run.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 60
    while children <= set(processes_of(workspace)):
        assert time.monotonic() < deadline, "the pipeline never began stopping its children"
        time.sleep(0.01)
    run.send_signal(signal.SIGTERM)
    output = run.communicate(timeout=60)[0]
    assert run.returncode != 0
    assert all_stopped(workspace, timeout=5), processes_of(workspace)
    assert "ABORT step 2 (weight 20%): interrupted" in output, output[-2000:]
    assert serving(workspace) == "1"


def test_sigint_to_nox_alone_stops_every_child(workspace: Path, runs: list[subprocess.Popen[str]]) -> None:
    """`kill -INT` of nox, not of its process group: the pipeline gets SIGTERM 0.3 s later and SIGKILL 0.2 s
    after that, in the middle of its cleanup; what it started stops all the same (769653c left services,
    Caddy and Locust running)."""
    run = start(runs, workspace, parent=NOX_ON_SIGINT)
    wait_for_live_traffic(run)
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=30) == 130
    assert all_stopped(workspace), processes_of(workspace)
    assert serving(workspace) == "1"
