# /// script
# requires-python = ">=3.11"
# dependencies = ["pydantic>=2.9", "pyyaml>=6.0.2"]  # pyproject's `config` group: enough to load environments/
# ///
"""Which environments the monitor workflow checks (.github/workflows/monitor.yml, the `plan` job).

    PYTHONPATH=. uv run --script scripts/monitor_plan.py

A scheduled run (SCHEDULE: GitHub's `github.event.schedule`, the cron that fired) checks every environment
whose monitoring.schedule is that cron; a run by hand (ENVIRONMENT) checks that environment. Writes
`environments=["staging", ...]` for GITHUB_OUTPUT, and the list to stderr (the job's log).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ENVIRONMENTS = Path("environments")


def plan(environ: Mapping[str, str], config_dir: Path = ENVIRONMENTS) -> list[str]:
    """The environments this run checks."""
    from pipeline.config import known_environments, load_config  # noqa: PLC0415  (the `config` group)
    from pipeline.deploy.workflow_schedules import monitor_due  # noqa: PLC0415

    chosen = environ.get("ENVIRONMENT", "")
    if chosen:
        return [load_config(chosen, config_dir).name]
    configs = [load_config(env, config_dir) for env in known_environments(config_dir)]
    return [c.name for c in monitor_due(configs, environ.get("SCHEDULE", ""))]


def main(environ: Mapping[str, str] = os.environ) -> int:
    environments = plan(environ)
    sys.stderr.write(f"monitor: {', '.join(environments) or 'none due'}\n")
    sys.stdout.write(f"environments={json.dumps(environments)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
