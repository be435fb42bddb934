"""The commands of docs/rollout.md, run as written (through `python -m pipeline`, which the nox
sessions call), in order, on a fresh workspace: each ends the way the page says it does."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the whole pipeline, then four rehearsals

REPO = Path(__file__).parents[3]
SESSION_TO_STAGE = {"pipeline": "run"}
EXPECTED_EXIT = {"errors=0.2": 1, "latency=400ms": 1}
"""A command proving that the analysis catches a bad release exits 1; every other exits 0."""


def documented_commands() -> list[list[str]]:
    page = (REPO / "docs" / "rollout.md").read_text()
    block = re.search(r"```bash\n(.*?)```", page, re.DOTALL)
    assert block is not None, "docs/rollout.md lost its command block"
    commands = []
    for line in block.group(1).splitlines():
        words = line.split("#")[0].split()
        assert words[:3] == ["nox", "-s", words[2]], line
        session, args = words[2], [w for w in words[3:] if w != "--"]
        commands.append([SESSION_TO_STAGE.get(session, session), *args])
    return commands


def test_the_documented_rollout_flow_works_as_written(tmp_path: Path) -> None:
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    commands = documented_commands()
    assert [c[0] for c in commands][:2] == ["run", "rollout"]
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", *command, "--workdir", str(tmp_path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        expected = next((code for fault, code in EXPECTED_EXIT.items() if fault in command), 0)
        assert done.returncode == expected, (
            f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
        )
