"""The crons of a scheduled workflow held to the environments' YAML: GitHub starts a workflow only on the
`on.schedule` entries written in its file, so each environment's schedule must be there, and nothing else.

Two workflows are scheduled from environments/*.yaml: batch.yml (`batch.schedule`, where `batch.scheduled_by`
is `cd`) and monitor.yml (`monitoring.schedule`). `render --check` reports every difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from pipeline.config import Config

Cron = tuple[str, str | None]
"""A cron expression and its IANA time zone (None: UTC)."""


def workflow_crons(path: Path) -> list[Cron]:
    """Each `on.schedule` entry of the workflow at `path`; none when there is no such file."""
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    # YAML 1.1 reads the key `on` as true.
    triggers = data.get("on", data.get(True)) or {}
    entries = (triggers.get("schedule") or []) if isinstance(triggers, dict) else []
    return [(str(entry["cron"]), entry.get("timezone")) for entry in entries]


def schedule_problems(
    workflow: Path, listed: Iterable[Cron], wanted: Mapping[Cron, list[str]], key: str
) -> list[str]:
    """Each environment whose schedule (the YAML key `key`) `workflow` lacks, and each cron of the workflow
    no environment asks for. `wanted`: cron -> the environments scheduled on it."""
    listed = list(listed)
    problems = []
    for (cron, zone), envs in sorted(wanted.items(), key=lambda item: item[1]):
        if (cron, zone) in listed:
            continue
        entry = f'- cron: "{cron}"' + (f"\n    timezone: {zone}" if zone else "")
        macro = cron.startswith("@")
        problems.append(
            f"environments/{envs[0]}.yaml: {key} {cron!r}"
            + (f" ({zone})" if zone else "")
            + f" is not under `on.schedule` of {workflow}: "
            + (
                "GitHub takes five cron fields only: write it as minute hour day month weekday"
                if macro
                else f"add `{entry}` there (GitHub starts the workflow on the crons listed in the file)"
            )
        )
    problems += [
        f"{workflow}: cron {cron!r}" + (f" ({zone})" if zone else "") + f" is no environment's {key}: "
        "remove it, or schedule an environment on it"
        for cron, zone in listed
        if (cron, zone) not in wanted
    ]
    return problems


MONITOR_WORKFLOW = Path(".github/workflows/monitor.yml")
"""The scheduled checks of every environment with a `monitoring.schedule`."""


def monitor_schedules(configs: Iterable[Config]) -> dict[Cron, list[str]]:
    """Cron -> the environments monitor.yml checks on it."""
    found: dict[Cron, list[str]] = {}
    for config in configs:
        if config.monitoring.schedule is not None:
            found.setdefault((config.monitoring.schedule, None), []).append(config.name)
    return found


def monitor_problems(root: Path, configs: Iterable[Config]) -> list[str]:
    """monitor.yml's crons against the environments' `monitoring.schedule`."""
    return schedule_problems(
        MONITOR_WORKFLOW,
        workflow_crons(root / MONITOR_WORKFLOW),
        monitor_schedules(configs),
        "monitoring.schedule",
    )


def monitor_due(configs: Iterable[Config], schedule: str) -> list[Config]:
    """The environments monitor.yml checks when the cron `schedule` fires (`github.event.schedule`)."""
    return [c for c in configs if c.monitoring.schedule == schedule]
