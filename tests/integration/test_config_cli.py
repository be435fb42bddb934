"""`python -m pipeline config` as a process: a bad environment file exits 2 with the file, line and key."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_config_command_exits_2_on_a_duplicate_key(tmp_path: Path) -> None:
    config_dir = tmp_path / "environments"
    config_dir.mkdir()
    (config_dir / "base.yaml").write_text((REPO / "environments" / "base.yaml").read_text())
    path = config_dir / "dev.yaml"
    path.write_text("extends: base\ndeploy:\n  namespace: a\ndeploy:\n  namespace: b\n")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "config", "--env", "dev", "--config-dir", str(config_dir)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    assert f"{path}:4:1: duplicate key 'deploy' (first at line 2)" in result.stderr
    assert "namespace" not in result.stdout
