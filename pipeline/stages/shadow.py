"""shadow: the candidate answers copies of live traffic while users get the stable version's answers.

Here: the version holding alias ENV (stable) and the current export (candidate) as service processes,
the mirror (pipeline/shadow/mirror.py) in front of stable copying requests to the candidate, and Locust
users (pipeline/shadow/users.py) checking that every answer came from stable. The judge
(pipeline/shadow/judge.py) compares the paired answers against `shadow.gates`. A first release (nothing
serves ENV), a candidate that already serves it or a breaking release (stable cannot answer its requests)
is a stated skip. Moves no alias and starts nothing that outlives the stage.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.adapters import registry
from pipeline.adapters.locust import LOCUSTFILE, PROFILE_FILE, locust_profile, run_locust
from pipeline.adapters.processes import free_port, signals_deferred, started_process, stop
from pipeline.adapters.service_process import ServiceProcess, running_versions
from pipeline.artifacts import ModelDir, inputs_key, service_code
from pipeline.config import Config, ShadowSpec
from pipeline.console import Reporter
from pipeline.errors import StageSkipped
from pipeline.release.compatibility import same_requests
from pipeline.rollout.analysis import Window, scrape, window
from pipeline.rollout.rehearsal import parse_fault, user_request_counts
from pipeline.shadow import MIRROR_FILE, STABLE_VERSION_VARIABLE, USERS_FILE
from pipeline.shadow.judge import Comparison, Paired, check_feature, compare, pair
from pipeline.stage import Check, Reuse, StageContext, StageResult, reusable
from pipeline.workspace import Workspace, write_json

VERDICT_FILE = "shadow.json"
EXCHANGES_FILE = "exchanges.jsonl"
CHART_FILE = "shadow.png"
REUSE: Reuse = "pass"
"""A shadow run measures this machine too: a pass stands for the same inputs, a failure is measured again."""


@dataclass(frozen=True, kw_only=True)
class ShadowResult(StageResult):
    environment: str
    decision: str
    """The verdict's line: PASS, or the measurement that failed (or left it inconclusive)."""


def run(ctx: StageContext) -> StageResult:
    c, w, r = ctx.config, ctx.workspace, ctx.reporter
    if not c.shadow.enabled:
        raise StageSkipped(f"shadow.enabled is false for {c.name}: the candidate is not shadowed")
    stable = registry.alias_model_dir(c, w, c.alias)
    if stable is None:
        raise StageSkipped(
            f"no version holds alias {c.alias!r} (a first release to {c.name}): no live answers to compare with"
        )
    candidate = ctx.exported_model()
    if stable[0].path == candidate.path:
        raise StageSkipped(f"the candidate {candidate.version} already serves {c.name}: nothing to compare")
    breaking = same_requests(candidate.read_card(), stable[0].read_card())
    if breaking is not None:
        raise StageSkipped(
            f"stable cannot answer the candidate's requests ({breaking}): no shadow comparison"
        )
    return shadow(
        c,
        w,
        r,
        candidate=candidate,
        stable=stable,
        candidate_fault=ctx.args.candidate_fault,
        fresh=ctx.args.fresh,
    )


def shadow(
    config: Config,
    workspace: Workspace,
    reporter: Reporter,
    *,
    candidate: ModelDir,
    stable: tuple[ModelDir, str],
    candidate_fault: str | None = None,
    fresh: bool = False,
) -> ShadowResult:
    """Mirror `shadow.duration_s` of user traffic from `stable` (folder, registry version) to `candidate`
    and judge the paired answers. A pass of the same inputs is reused unless `fresh` or a fault is injected."""
    spec = config.shadow
    fault = parse_fault(candidate_fault, config.name) if candidate_fault else {}
    stable_dir, stable_version = stable
    stable_card = stable_dir.read_card()
    check_feature(spec, stable_card)
    key = inputs_key(
        config,
        ("shadow", "service", "loadtest"),
        candidate.version,
        stable_dir.version,
        *service_code(),
        LOCUSTFILE,
        USERS_FILE,
        MIRROR_FILE,
    )
    record_path = candidate.verdict("shadow", config.name)
    previous = candidate.read_optional(record_path)
    if not fault and reusable(previous, key, REUSE, fresh=fresh):
        reporter.note(f"reused the shadow run of {previous['run_id']}: same versions, service and gates")
        result = ShadowResult(
            status=previous["status"],
            headline=previous["decision"],
            reused=True,
            artifacts={"verdict": record_path, "chart": Path(previous["chart"])},
            checks=[Check(**check) for check in previous["checks"]],
            environment=config.name,
            decision=previous["decision"],
        )
        reporter.verdict("shadow", result)
        return result
    report_dir = workspace.run_dir(config) / "shadow"
    report_dir.mkdir(parents=True, exist_ok=True)
    reporter.note(
        f"stable: version {stable_version} ({stable_dir.version}) answers the users; candidate "
        f"{candidate.version} gets {spec.mirror_percent}% of their requests as copies for {spec.duration_s:g}s"
    )
    if fault:
        reporter.warn(f"the candidate runs with injected faults: {fault}")
    windows = _mirrored_traffic(config, stable_dir, candidate, fault, report_dir, reporter)
    exchanges = [json.loads(line) for line in (report_dir / EXCHANGES_FILE).read_text().splitlines()]
    paired = pair(exchanges, stable_card, candidate.read_card(), spec.feature)
    comparison = compare(paired, spec, stable_card, windows=windows)
    counts = user_request_counts(report_dir, None)
    checks = [*_user_checks(counts, stable_card.version), *_copy_checks(paired, spec), *comparison.checks]
    users_failed = any(check.failed for check in checks if check.scope == "users")
    status = "fail" if users_failed or comparison.verdict in {"fail", "inconclusive"} else "pass"
    if status == "pass" and comparison.verdict == "warn":
        status = "warn"
    decision = next(c.line() for c in checks if c.failed) if users_failed else comparison.decision
    decision = f"FAIL: {decision}" if users_failed else decision
    chart(paired, comparison, report_dir / CHART_FILE, title=f"{config.name} shadow: {decision}")
    result = ShadowResult(
        status=status,  # type: ignore[arg-type]
        headline=decision,
        artifacts={
            "verdict": report_dir / VERDICT_FILE,
            "chart": report_dir / CHART_FILE,
            "exchanges": report_dir / EXCHANGES_FILE,
        },
        checks=checks,
        environment=config.name,
        decision=decision,
    )
    reporter.verdict("shadow", result)
    record: dict[str, Any] = {
        "status": status,
        "decision": decision,
        "run_id": workspace.run_id,
        "stable": {"registry_version": stable_version, "artifact_version": stable_dir.version},
        "candidate": {"artifact_version": candidate.version, "fault": fault},
        "user_requests": counts,
        "copies": dict(paired.copies),
        "unpaired": dict(paired.unpaired),
        "feature_bins": [{"bin": b, "rows": n, "disagreement": d} for b, n, d in comparison.bins],
        "checks": [check.__dict__ for check in checks],
        "chart": str(report_dir / CHART_FILE),
    }
    write_json(report_dir / VERDICT_FILE, record)
    if not fault:
        write_json(record_path, {**record, "inputs": key})
        registry.tag_registered(
            config, workspace, candidate, registry.verdict_tags("shadow", config.name, status), reporter
        )
    return result


def _mirrored_traffic(  # noqa: PLR0917  (the run's parts, each named once)
    config: Config,
    stable_dir: ModelDir,
    candidate: ModelDir,
    fault: dict[str, str],
    report_dir: Path,
    reporter: Reporter,
) -> tuple[Window | None, Window | None]:
    """Both services, the mirror in front of stable and the users for `shadow.duration_s`; every process
    stopped on the way out. Returns (candidate, stable) counters over the window, from their /metrics."""
    spec = config.shadow
    stack = ExitStack()
    try:
        stable, shadowed = stack.enter_context(
            running_versions(config, stable_dir.path, candidate.path, report_dir, candidate_settings=fault)
        )
        before = scrape(shadowed.metrics_url), scrape(stable.metrics_url)
        port = free_port()
        process = stack.enter_context(
            started_process(
                _mirror_command(spec, stable, shadowed, port, report_dir / EXCHANGES_FILE, config),
                dict(os.environ),
                report_dir / "mirror.log",
                f"http://127.0.0.1:{port}/readyz",
                what="the shadow mirror",
            )
        )
        reporter.note(
            f"users -> mirror at 127.0.0.1:{port} -> stable; copies -> candidate (queue {spec.queue})"
        )
        profile = locust_profile(config, candidate)
        profile["profile"] = {**profile["profile"], "shape": "constant", "duration_s": spec.duration_s}
        write_json(report_dir / PROFILE_FILE, profile)
        load = config.loadtest.model_copy(
            update={"profile": config.loadtest.profile.model_copy(update={"duration_s": spec.duration_s})}
        )
        run_locust(
            f"http://127.0.0.1:{port}",
            stable.headers,
            report_dir / PROFILE_FILE,
            report_dir,
            load,
            reporter=reporter,
            locustfile=USERS_FILE,
            extra_env={STABLE_VERSION_VARIABLE: stable_dir.read_card().version},
        )
        stop(process)  # the mirror drains its queue and writes the exchanges
        after = scrape(shadowed.metrics_url), scrape(stable.metrics_url)
    finally:
        with signals_deferred():
            stack.close()
    return (
        None if before[0] is None or after[0] is None else window(before[0], after[0]),
        None if before[1] is None or after[1] is None else window(before[1], after[1]),
    )


def _mirror_command(  # noqa: PLR0917
    spec: ShadowSpec, stable: ServiceProcess, candidate: ServiceProcess, port: int, out: Path, config: Config
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pipeline.shadow.mirror",
        "--stable",
        stable.url,
        "--candidate",
        candidate.url,
        "--port",
        str(port),
        "--out",
        str(out),
        "--percent",
        str(spec.mirror_percent),
        "--queue",
        str(spec.queue),
        "--senders",
        str(config.loadtest.profile.users),
    ]


def _user_checks(counts: dict[str, Any], version: str) -> list[Check]:
    """What the users saw, from Locust's side: every answer must be HTTP 200 from the stable version."""
    if not counts:
        return [Check(scope="users", metric="requests", value=None, result="fail", note="no Locust stats")]
    wrong = counts["failures"] + counts["proxy_resets"]
    kinds = ", ".join(counts["failure_kinds"])
    return [
        Check.bounded("users", "requests", counts["requests"], ">=", 1),
        Check.bounded(
            "users", "answers not from stable", wrong, "<=", 0, note=kinds or f"all from {version}"
        ),
    ]


def _copy_checks(paired: Paired, spec: ShadowSpec) -> list[Check]:
    """What became of the copies: dropped at a full queue, or still queued at the end (info)."""
    return [
        Check(scope="mirror", metric=f"copies {kind}", value=paired.copies[kind], result="info", note=note)
        for kind, note in (
            ("answered", f"{spec.mirror_percent}% of the prediction requests copied"),
            ("dropped", f"queue of {spec.queue} full: the copy was dropped, the user's request was not"),
            ("unanswered", "still queued when the window ended"),
        )
    ]


def chart(paired: Paired, comparison: Comparison, path: Path, *, title: str) -> None:
    """Candidate vs stable score per paired row, both score distributions, both latencies (as the mirror
    timed them) and the disagreement per category of `shadow.feature`."""
    import matplotlib as mpl  # noqa: PLC0415  (slow import, only here)

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, ((scatter, hist), (latency, bins)) = plt.subplots(2, 2, figsize=(10, 7.5))
    scatter.scatter(paired.stable_scores, paired.candidate_scores, s=6, alpha=0.4)
    scatter.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    scatter.set_xlabel("stable score")
    scatter.set_ylabel("candidate score")
    for name, values, color in (
        ("stable", paired.stable_scores, "tab:blue"),
        ("candidate", paired.candidate_scores, "tab:orange"),
    ):
        hist.hist(values, bins=20, alpha=0.5, label=name, color=color)
    hist.set_xlabel("score")
    hist.legend()
    for name, values, color in (
        ("stable", paired.stable_ms, "tab:blue"),
        ("candidate", paired.candidate_ms, "tab:orange"),
    ):
        ordered = sorted(values)
        latency.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=name, color=color)
    latency.set_xlabel("answer time seen by the mirror (ms)")
    latency.set_ylabel("share of requests")
    latency.set_xscale("log")
    latency.legend()
    if comparison.bins:
        bins.barh([label for label, _, _ in comparison.bins], [share for _, _, share in comparison.bins])
        bins.set_xlabel("share of rows where the versions disagree")
    else:
        bins.text(0.5, 0.5, "no shadow.feature set", ha="center", va="center")
        bins.set_axis_off()
    figure.suptitle(title[:110], fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
