# /// script
# requires-python = ">=3.11"
# dependencies = ["pydantic>=2.9", "pyyaml>=6.0.2"]  # pyproject's `config` group: enough to load environments/
# ///
"""What CD's batch scores (.github/workflows/batch.yml), and the evidence of each run.

    PYTHONPATH=. uv run --script scripts/batch_plan.py plan              # the `plan` job
    PYTHONPATH=. uv run --script scripts/batch_plan.py summary ENV       # after `nox -s batch`

plan: a scheduled run (SCHEDULE: GitHub's `github.event.schedule`, the cron that fired) scores every
environment whose batch.schedule is that cron and whose batch.scheduled_by is `cd`; a run by hand
(ENVIRONMENT) scores that environment, on INPUT and OUTPUT when given, else its batch.input and
batch.output. Writes `batches=[{"environment", "input", "output"}, ...]` for GITHUB_OUTPUT.

summary: the run's batch.json (reports/ENV/RUN/batch/, written by the stage) as a Markdown table of its
checks, appended to GITHUB_STEP_SUMMARY when set (the run's page), and `output=FOLDER` (the scores,
`{date}` resolved) for GITHUB_OUTPUT. No batch.json: the stage stopped before scoring; its log says why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ENVIRONMENTS = Path("environments")
REPORTS = Path("reports")


class PlanError(Exception):
    """A run by hand that cannot score: the message names the input to give or the key to set."""


def plan(environ: Mapping[str, str], config_dir: Path = ENVIRONMENTS) -> list[dict[str, str]]:
    """The batches of this run, one per environment."""
    from pipeline.config import known_environments, load_config  # noqa: PLC0415  (the `config` group)
    from pipeline.deploy.batch_jobs import due  # noqa: PLC0415

    chosen = environ.get("ENVIRONMENT", "")
    if not chosen:
        configs = [load_config(env, config_dir) for env in known_environments(config_dir)]
        return [
            {"environment": c.name, "input": str(c.batch.input), "output": str(c.batch.output)}
            for c in due(configs, environ.get("SCHEDULE", ""))
        ]
    spec = load_config(chosen, config_dir).batch
    given = {"input": environ.get("INPUT") or spec.input, "output": environ.get("OUTPUT") or spec.output}
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise PlanError(
            f"{chosen}: no {' and no '.join(missing)}: give the workflow's input(s) {', '.join(missing)}, "
            f"or set batch.{' and batch.'.join(missing)} in {config_dir / f'{chosen}.yaml'}"
        )
    return [{"environment": chosen, **{name: str(value) for name, value in given.items()}}]


def latest_summary(env: str, reports: Path = REPORTS) -> dict[str, object] | None:
    """The newest batch.json of ENV's runs in this workspace, or None."""
    found = sorted(reports.glob(f"{env}/*/batch/batch.json"), key=lambda path: path.stat().st_mtime)
    return json.loads(found[-1].read_text(encoding="utf-8")) if found else None


def _figure(value: object) -> str:
    """A check's value or bound as the stage prints it: four significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(env: str, summary: Mapping[str, object] | None) -> str:
    """The evidence of ENV's batch: the release it scored with, the counts, one row per check."""
    if summary is None:
        return f"## batch {env}: no result\n\nThe stage stopped before scoring; its log says why.\n"
    model = summary["model"]
    assert isinstance(model, dict)
    checks = summary["checks"]
    assert isinstance(checks, list)
    lines = [
        f"## batch {env}: {str(summary['status']).upper()}",
        "",
        (
            f"{model['name']} {model['version']} (registry version {model['registry_version']}, onnx sha256 "
            f"`{str(model['onnx_sha256'])[:12]}`), engine {summary['engine']}: {summary['rows']} rows read, "
            f"{summary['rejected']} rejected; scores in `{summary['output']}`"
        ),
        "",
        "| check | value | comparator | bound | result | note |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {c['check']} | {_figure(c['value'])} | {c['comparator']} | {_figure(c['bound'])} | "
            f"{c['result']} | {c['note']} |"
            for c in checks
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(prog="scripts/batch_plan.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("plan", help="the batches of this run, as `batches=JSON`")
    summary = commands.add_parser("summary", help="a run's checks as Markdown, and `output=FOLDER`")
    summary.add_argument("env")
    args = parser.parse_args(argv)
    if args.command == "plan":
        try:
            batches = plan(environ)
        except PlanError as exc:
            sys.stderr.write(f"::error::{exc}\n")
            return 2
        sys.stderr.write(f"batches: {', '.join(b['environment'] for b in batches) or 'none due'}\n")
        sys.stdout.write(f"batches={json.dumps(batches)}\n")
        return 0
    result = latest_summary(args.env)
    text = markdown(args.env, result)
    sys.stderr.write(text)
    step_summary = environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with Path(step_summary).open("a", encoding="utf-8") as handle:
            handle.write(text)
    if result is not None:
        sys.stdout.write(f"output={result['output']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
