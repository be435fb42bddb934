"""The release evidence of one `run`: what was released and why it was safe, in one page.

`reports/<env>/<run-id>/index.html` is self-contained (charts embedded, no scripts, no network) and
`report.md` is the same for pull-request comments and the GitHub job summary. Both are written even
when a stage fails, so a failed run explains itself.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.adapters import registry
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.workspace import Workspace, read_json, write_bytes

LATEST = "latest"


@dataclass(frozen=True)
class StageRecord:
    name: str
    status: str
    """passed, reused, failed, skipped or not run."""
    seconds: float
    figure: str = ""
    """The stage's headline (or the reason it was skipped or failed)."""
    artifacts: dict[str, str] = field(default_factory=dict)
    """What the stage wrote, by name (its result's artifacts): the report reads these files."""


def _artifact(records: Sequence[StageRecord], stage: str, name: str) -> Any:
    """The JSON record `name` that `stage` wrote in this run (or reused), None when it wrote none."""
    for record in records:
        path = record.artifacts.get(name) if record.name == stage else None
        if path is not None and Path(path).is_file():
            return read_json(Path(path))
    return None


def collect(config: Config, workspace: Workspace, records: Sequence[StageRecord]) -> dict[str, Any]:
    """Everything the report shows, from the files the stages' results name (never recomputed here)."""
    card = _artifact(records, "export", "card")
    registration = _artifact(records, "register", "registration")
    image = _artifact(records, "image", "record") or {}
    return {
        "environment": config.name,
        "run_id": workspace.run_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "stages": [asdict(record) for record in records],
        "lineage": {
            "git_sha": workspace.git_sha(),
            "data_sha256": card["lineage"]["data_sha256"] if card else None,
            "model": config.model.name,
            "model_version": registration["model_version"] if registration else None,
            "artifact_version": card["version"] if card else None,
            "onnx_sha256": card["onnx"]["sha256"] if card else None,
            "image_digest": image.get("digest"),
            "image_id": image.get("image_id"),
        },
        "parity": card["parity"] if card else None,
        "parity_bounds": config.export.parity.model_dump(),
        "gate": _artifact(records, "gate", "gate"),
        "loadtest": _artifact(records, "loadtest", "gate"),
        "rollout": _artifact(records, "rollout", "timeline"),
    }


# --- rendering -----------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, str]:
    """The same table as HTML and as Markdown."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td class='{_css(c)}'>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    markdown = [f"| {' | '.join(headers)} |", f"|{'---|' * len(headers)}"]
    markdown += [f"| {' | '.join(_fmt(c).replace('|', '/') for c in row)} |" for row in rows]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>", "\n".join(markdown)


def _css(cell: Any) -> str:
    text = str(cell).upper()
    if text in {"PASS", "PASSED", "PROMOTED", "REUSED"}:
        return "ok"
    if text in {"FAIL", "FAILED", "ABORTED"}:
        return "bad"
    return "warn" if text in {"SKIPPED", "WARN", "NOT RUN"} else ""


def _image(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p class='muted'>{html.escape(alt)}: no chart</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def sections(evidence: dict[str, Any], run_dir: Path) -> list[tuple[str, str, str]]:
    """(title, html, markdown) per section, in reading order."""
    out: list[tuple[str, str, str]] = []
    stages = evidence["stages"]
    out.append(
        (
            "Stages",
            *_table(
                ["stage", "status", "seconds", "key figure"],
                [(s["name"], s["status"], round(s["seconds"], 1), s["figure"]) for s in stages],
            ),
        )
    )
    lineage = evidence["lineage"]
    out.append(("Lineage", *_table(["what", "value"], list(lineage.items()))))

    gate = evidence["gate"]
    if gate:
        champion = (
            f"Compared with version {gate['champion_version']} serving {evidence['environment']}."
            if gate["champion_version"]
            else "First deploy: no version serves this environment, so only the absolute thresholds applied."
        )
        rows = [
            (
                c["metric"],
                c["kind"],
                c["value"],
                c["comparator"],
                c["bound"],
                "PASS" if c["passed"] else "FAIL",
            )
            for c in gate["checks"]
        ]
        table_html, table_md = _table(["metric", "check", "value", "comparator", "bound", "result"], rows)
        metrics = [(m, v, (gate["champion"] or {}).get(m)) for m, v in gate["candidate"].items()]
        cmp_html, cmp_md = _table(["metric", "candidate", "champion"], metrics)
        out.append(
            (
                f"Metric gate: {gate['status'].upper()} ({gate['mode']})",
                f"<p>{html.escape(champion)}</p>{table_html}{cmp_html}",
                f"{champion}\n\n{table_md}\n\n{cmp_md}",
            )
        )

    parity = evidence["parity"]
    if parity:
        bounds = evidence["parity_bounds"]
        out.append(
            (
                "ONNX parity",
                *_table(
                    ["check", "value", "bound"],
                    [
                        ("rows", parity["rows"], None),
                        ("label agreement", parity["label_agreement"], f">= {bounds['min_label_agreement']}"),
                        ("max abs probability diff", parity["max_abs_diff"], f"<= {bounds['max_abs_diff']}"),
                    ]
                    if "label_agreement" in parity
                    else [  # a regression: either difference within its bound passes (export.parity)
                        ("rows", parity["rows"], None),
                        ("max abs diff", parity["max_abs_diff"], f"<= {bounds['max_abs_diff']}"),
                        (
                            "max relative diff",
                            parity["max_relative_diff"],
                            f"<= {bounds['max_relative_diff']}",
                        ),
                    ],
                ),
            )
        )

    load = evidence["loadtest"]
    if load:
        load_rows: list[tuple[Any, ...]] = [
            (
                f"{c['scope']} {c['metric']}",
                c["value"],
                c["comparator"],
                c["bound"],
                "PASS" if c["passed"] else "FAIL",
            )
            for c in load["checks"]
        ]
        table_html, table_md = _table(["metric", "value", "comparator", "bound", "result"], load_rows)
        chart = _image(run_dir / "loadtest" / "chart.png", "load test: latency percentiles and requests/s")
        out.append(
            (
                f"Load test: {load['status'].upper()}",
                table_html + chart,
                table_md + "\n\n![load test](loadtest/chart.png)",
            )
        )

    rollout = evidence["rollout"]
    if rollout:
        decisions = [
            (e["at_s"], e["step"], e["action"], e["weight"], e["verdict"], e["detail"])
            for e in rollout["events"]
            if e["action"] != "analysis" or e["verdict"] != "PASS"  # failed and inconclusive windows
        ]
        table_html, table_md = _table(["t (s)", "step", "action", "weight %", "verdict", "detail"], decisions)
        users = rollout.get("user_requests") or {}
        summary = (
            f"{rollout['strategy']}: {rollout['reason']}. Simulated users sent {users.get('requests', '-')} "
            f"requests: {users.get('failures', '-')} failed answers, {users.get('proxy_resets', '-')} connections "
            "dropped by the local splitter's config reloads (one per weight change)."
        )
        chart = _image(run_dir / "rollout" / "timeline.png", "rollout: weight, error ratio and p95 over time")
        out.append(
            (
                f"Rollout rehearsal: {rollout['status'].upper()}",
                f"<p>{html.escape(summary)}</p>{table_html}{chart}",
                f"{summary}\n\n{table_md}\n\n![rollout](rollout/timeline.png)",
            )
        )

    skipped = [(s["name"], s["figure"]) for s in stages if s["status"] in {"skipped", "not run"}]
    if skipped:
        out.append(("Skipped stages", *_table(["stage", "reason"], skipped)))
    return out


_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1b1b1b}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}.ok{color:#116611;font-weight:600}.bad{color:#b00020;font-weight:600}
.warn{color:#9a6700;font-weight:600}.muted{color:#777}img{max-width:100%;border:1px solid #eee}
"""


def render(evidence: dict[str, Any], run_dir: Path) -> tuple[str, str]:
    failed = [s for s in evidence["stages"] if s["status"] == "failed"]
    verdict = f"FAILED at {failed[0]['name']}" if failed else "released"
    title = f"{evidence['lineage']['model']} -> {evidence['environment']}: {verdict}"
    parts = sections(evidence, run_dir)
    page = "".join(f"<h2>{html.escape(t)}</h2>{h}" for t, h, _ in parts)
    head = f"<p class='muted'>run {evidence['run_id']}, {evidence['created_at']}</p>"
    document = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1 class='{'bad' if failed else 'ok'}'>{html.escape(title)}</h1>{head}{page}</body></html>\n"
    )
    markdown = f"# {title}\n\nrun `{evidence['run_id']}`\n\n" + "\n\n".join(
        f"## {t}\n\n{m}" for t, _, m in parts
    )
    return document, markdown + "\n"


def write_report(
    config: Config, workspace: Workspace, records: Sequence[StageRecord], reporter: Reporter
) -> Path:
    """Write index.html, report.md and evidence.json; point reports/latest here; attach and summarise."""
    run_dir = workspace.run_dir(config)
    evidence = collect(config, workspace, records)
    document, markdown = render(evidence, run_dir)
    write_bytes(run_dir / "evidence.json", (json.dumps(evidence, indent=2) + "\n").encode())
    write_bytes(run_dir / "report.md", markdown.encode())
    write_bytes(run_dir / "index.html", document.encode())
    _point_latest(workspace.reports, run_dir)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as handle:
            handle.write(markdown)
    _attach(config, workspace, evidence, run_dir, reporter)
    reporter.note(f"report: {run_dir / 'index.html'} (and report.md; reports/{LATEST} points here)")
    return run_dir / "index.html"


def _point_latest(reports: Path, run_dir: Path) -> None:
    link = reports / LATEST
    temporary = reports / f".{LATEST}.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(run_dir.relative_to(reports))
    temporary.replace(link)  # atomic: readers never see a missing link


def _attach(
    config: Config, workspace: Workspace, evidence: dict[str, Any], run_dir: Path, reporter: Reporter
) -> None:
    """Log the report as artifacts of the registered version's run, so the registry holds the evidence."""
    version = evidence["lineage"]["model_version"]
    if version is None:
        return
    mlflow = registry.client(config, workspace)
    run_id = mlflow.get_model_version(config.model.name, version).run_id
    if not run_id:
        return
    for name in ("index.html", "report.md", "evidence.json"):
        mlflow.log_artifact(run_id, str(run_dir / name), f"reports/{config.name}/{workspace.run_id}")
    reporter.note(
        f"attached the report to version {version} (run {run_id}, reports/{config.name}/{workspace.run_id})"
    )


# --- history -------------------------------------------------------------------------------------


def history(config: Config, workspace: Workspace, reporter: Reporter) -> list[dict[str, Any]]:
    """Which versions served the environment, when, with what evidence; newest first."""
    mlflow = registry.client(config, workspace)
    entries = list(reversed(registry.alias_history(mlflow, config.model.name, config.name)))
    rows = []
    for entry in entries:
        tags = registry.version_tags(mlflow.get_model_version(config.model.name, entry["version"]))
        rows.append(
            {
                **entry,
                "gate": tags.get(f"gate.{config.name}"),
                "loadtest": tags.get(f"loadtest.{config.name}") or tags.get("loadtest"),
                "rollout": tags.get(f"rollout.{config.name}") or tags.get("rollout"),
                "image": tags.get("image_digest") or tags.get("image"),
                "git_sha": (tags.get("git_sha") or "")[:12],
            }
        )
    if not rows:
        reporter.note(f"no version has served {config.name} yet")
        return rows
    serving = registry.alias_version(mlflow, config.model.name, config.alias)
    reporter.note(f"{config.model.name} in {config.name}: now version {serving.version if serving else '-'}")
    reporter.table(
        ["when", "action", "version", "previous", "gate", "loadtest", "rollout", "git sha", "image"],
        [
            (
                r["at"],
                r["action"],
                r["version"],
                r["previous"],
                r["gate"],
                r["loadtest"],
                r["rollout"],
                r["git_sha"],
                r["image"],
            )
            for r in rows
        ],
    )
    return rows
