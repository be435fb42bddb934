"""Locust as a process: the command, the profile file the locustfile reads, and background traffic.

The load test stage runs it to a deadline and gates on its stats; the rollout rehearsal is handed a
`LocustTraffic` as its load generator. Both run the same `loadtests/locustfile.py` with the same payloads.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_service.contract.card import ModelCard
from pipeline.adapters.processes import spawn, stop
from pipeline.artifacts import ModelDir
from pipeline.config import Config, LoadTestSpec
from pipeline.console import Reporter
from pipeline.errors import StageError
from pipeline.workspace import write_json

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
STATS_FILE = "stats.json"
PROFILE_FILE = "profile.json"
STOP_TIMEOUT_S = 15
PROGRESS_INTERVAL_S = 3.0
"""How often the live view prints a line while Locust runs."""
LOCUST_GRACE_S = 60.0
"""Time Locust gets beyond the profile's duration to start, stop its users and write its reports."""


def v2_inputs(card: ModelCard) -> list[dict[str, Any]]:
    """The profile's `inputs`: per ONNX input its name, Open Inference Protocol datatype and the positions of
    its features in a row, so the locustfile builds v2 tensors without reading the card."""
    return [{"name": i.name, "datatype": i.v2_datatype, "columns": list(i.columns)} for i in card.inputs]


def locust_profile(config: Config, model: ModelDir) -> dict[str, Any]:
    """What the locustfile reads: the environment's profile and traffic, the card's inputs and the model's
    evaluation rows (JSON values as a client sends them: numbers, strings, booleans, null)."""
    evaluation = model.read_evaluation()
    card = model.read_card()
    features = list(card.feature_names)
    if evaluation["features"] != features:
        msg = f"{model.evaluation}: features differ from the card's ({model.card}); re-export the model"
        raise StageError(msg)
    spec = config.loadtest
    return {
        "environment": config.name,
        "model_name": card.name,
        "inputs": v2_inputs(card),
        "features": features,
        "rows": evaluation["rows"],
        "profile": spec.profile.model_dump(mode="json"),
        "traffic": spec.traffic.model_dump(mode="json"),
    }


def locust_command(url: str, report_dir: Path, locustfile: Path = LOCUSTFILE) -> list[str]:
    """Locust headless on `locustfile` against `url`, writing its reports into `report_dir`."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "--host",
        url,
        "--only-summary",
        # Locust would exit 1 on any failed request; the SLO gate decides instead.
        "--exit-code-on-error",
        "0",
        "--json-file",
        str(report_dir / Path(STATS_FILE).stem),
        "--html",
        str(report_dir / "report.html"),
        "--csv",
        str(report_dir / "locust"),
        "--csv-full-history",
    ]


def locust_environment(profile_path: Path, headers: Mapping[str, str]) -> dict[str, str]:
    """Variables the locustfile reads; the headers stay out of the profile file, so no key lands in a report."""
    return {"LOADTEST_PROFILE": str(profile_path), "LOADTEST_HEADERS": json.dumps(dict(headers))}


@dataclass(frozen=True)
class LocustTraffic:
    """Simulated users of one environment sending the model's evaluation rows, at a constant load."""

    config: Config
    model: ModelDir

    def start(
        self, url: str, headers: Mapping[str, str], report_dir: Path, *, duration_s: float
    ) -> subprocess.Popen[bytes]:
        """Locust in the background against `url` for at most `duration_s`, reports into `report_dir`."""
        report_dir.mkdir(parents=True, exist_ok=True)
        profile = locust_profile(self.config, self.model)
        profile["profile"] = {**profile["profile"], "shape": "constant", "duration_s": duration_s}
        write_json(report_dir / PROFILE_FILE, profile)
        env = {**os.environ, **locust_environment(report_dir / PROFILE_FILE, headers)}
        with (report_dir / "locust.log").open("wb") as log:
            return spawn(locust_command(url, report_dir), env=env, stdout=log)

    @staticmethod
    def stop(process: subprocess.Popen[bytes]) -> None:
        """SIGINT lets Locust stop its users and write its final stats; stop() escalates if it hangs."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                stop(process)


def run_locust(
    url: str,
    headers: Mapping[str, str],
    profile_path: Path,
    report_dir: Path,
    spec: LoadTestSpec,
    *,
    reporter: Reporter,
    locustfile: Path = LOCUSTFILE,
    extra_env: Mapping[str, str] | None = None,
) -> None:
    """Locust to its profile's end (plus a grace period), a progress line every few seconds; StageError
    when it hangs, fails or writes no final stats. `locustfile` and `extra_env`: another set of users
    (the shadow stage's, which check each answer)."""
    command = locust_command(url, report_dir, locustfile)
    env = {**os.environ, **locust_environment(profile_path, headers), **(extra_env or {})}
    log_path = report_dir / "locust.log"
    timeout = spec.profile.duration_s + LOCUST_GRACE_S
    with log_path.open("wb") as log:
        process = spawn(command, env=env, stdout=log)
    try:
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise StageError(f"Locust did not finish within {timeout:.0f}s; log: {log_path}")
            time.sleep(PROGRESS_INTERVAL_S)
            line = live_line(report_dir / "locust_stats_history.csv", spec.profile.duration_s)
            if line:
                reporter.note(line)
    finally:
        stop(process, timeout=STOP_TIMEOUT_S)
    if process.returncode != 0 or not (report_dir / STATS_FILE).is_file():
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
        raise StageError(f"Locust exited with {process.returncode} ({tail}); log: {log_path}")


def live_line(history: Path, duration_s: float) -> str | None:
    """The newest point of Locust's stats history as one progress line, for people watching."""
    if not history.is_file():
        return None
    with history.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]
    if len(rows) < 2:
        return None
    first, last = rows[0], rows[-1]
    elapsed = int(last["Timestamp"]) - int(first["Timestamp"])
    return (
        f"{elapsed:>3}s/{duration_s:g}s  users {last['User Count']}  {float(last['Requests/s']):.0f} req/s  "
        f"p95 {last['95%']} ms  failures {last['Total Failure Count']}"
    )


def chart(report_dir: Path) -> None:
    """chart.png: latency percentiles and requests/s of all requests over the run."""
    import matplotlib as mpl  # noqa: PLC0415  (slow import, only here)

    mpl.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt  # noqa: PLC0415

    with (report_dir / "locust_stats_history.csv").open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]

    def column(name: str) -> list[float]:
        return [float(row[name]) if row[name] not in {"", "N/A"} else float("nan") for row in rows]

    start = float(rows[0]["Timestamp"]) if rows else 0.0
    seconds = [float(row["Timestamp"]) - start for row in rows]
    figure, (latency, throughput) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    for name in ("50%", "95%", "99%"):
        latency.plot(seconds, column(name), label=f"p{name.rstrip('%')}")
    latency.set_ylabel("response time (ms)")
    latency.legend(loc="upper left")
    latency.grid(alpha=0.3)
    throughput.plot(seconds, column("Requests/s"), label="requests/s")
    throughput.plot(seconds, column("Failures/s"), label="failures/s", color="tab:red")
    throughput.set_ylabel("per second")
    throughput.set_xlabel("seconds since start")
    throughput.legend(loc="upper left")
    throughput.grid(alpha=0.3)
    figure.suptitle(report_dir.parent.name)
    figure.tight_layout()
    figure.savefig(report_dir / "chart.png", dpi=100)
    plt.close(figure)
