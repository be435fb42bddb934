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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_service.contract.card import ModelCard
from pipeline.adapters import registry
from pipeline.artifacts import ModelDir
from pipeline.config import Config
from pipeline.console import Reporter
from pipeline.release import quarantine
from pipeline.stage import CHECK_COLUMNS, Check
from pipeline.workspace import Workspace, read_json, write_bytes

LATEST = "latest"
STAGE_COLUMNS = ("stage", "status", "seconds", "key figure")
"""The columns of the run's summary, in the terminal and in the report."""


@dataclass(frozen=True)
class StageRecord:
    name: str
    status: str
    """passed, reused, failed, skipped or not run."""
    seconds: float
    figure: str = ""
    """The stage's headline (or the reason it was skipped or failed)."""
    artifacts: dict[str, str] = field(default_factory=dict)
    """What the stage wrote, by name (its result's artifacts): the report links them, charts embedded."""
    checks: list[Check] = field(default_factory=list)
    """The stage's checks (its result's): the report's table of the stage."""

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> StageRecord:
        """A record as evidence.json holds it."""
        checks = [Check(**check) for check in record.get("checks", [])]
        return cls(**{**record, "checks": checks})

    def row(self) -> tuple[str, ...]:
        """The stage's row under STAGE_COLUMNS."""
        return (self.name, self.status.upper(), f"{self.seconds:.1f}", self.figure)


def _artifact_path(records: Sequence[StageRecord], stage: str, name: str) -> Path | None:
    """The file `name` that `stage` wrote in this run (or reused), None when it wrote none."""
    for record in records:
        path = record.artifacts.get(name) if record.name == stage else None
        if path is not None and Path(path).is_file():
            return Path(path)
    return None


def _artifact(records: Sequence[StageRecord], stage: str, name: str) -> Any:
    """The JSON record `name` that `stage` wrote in this run (or reused), None when it wrote none."""
    path = _artifact_path(records, stage, name)
    return None if path is None else read_json(path)


def _exported_card(records: Sequence[StageRecord]) -> ModelCard | None:
    """The card export wrote (or reused) in this run, None when it wrote none."""
    path = _artifact_path(records, "export", "card")
    return None if path is None else ModelDir(path.parent).read_card()


def collect(config: Config, workspace: Workspace, records: Sequence[StageRecord]) -> dict[str, Any]:
    """Everything the report shows, from the files the stages' results name (never recomputed here)."""
    card = _exported_card(records)
    registration = _artifact(records, "register", "registration")
    image = _artifact(records, "image", "record") or {}
    return {
        "environment": config.name,
        "run_id": workspace.run_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "stages": [asdict(record) for record in records],
        "lineage": {
            "git_sha": workspace.git_sha(),
            "data_sha256": card.lineage.data_sha256 if card and card.lineage else None,
            "model": config.model.name,
            "model_version": registration["model_version"] if registration else None,
            "artifact_version": card.version if card else None,
            "onnx_sha256": card.sha256 if card else None,
            "image_digest": image.get("digest"),
            "image_id": image.get("image_id"),
        },
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
    return "warn" if text in {"SKIPPED", "WARN", "NOT RUN", "INCONCLUSIVE"} else ""


def _image(path: Path, alt: str) -> str:
    if not path.is_file():
        return f"<p class='muted'>{html.escape(alt)}: no chart</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def stage_section(record: StageRecord, run_dir: Path) -> tuple[str, str, str] | None:
    """Any stage's section: its key figure, its checks, its charts, then links to the other files it
    wrote; None for a stage with neither checks nor charts (the Stages table says all there is)."""
    charts = [(name, Path(path)) for name, path in record.artifacts.items() if path.endswith(".png")]
    if not record.checks and not charts:
        return None
    files = [(name, os.path.relpath(path, run_dir)) for name, path in record.artifacts.items()]
    files = [(name, target) for name, target in files if not target.endswith(".png")]
    table_html, table_md = (
        _table(CHECK_COLUMNS, [c.row() for c in record.checks]) if record.checks else ("", "")
    )
    page = [f"<p>{html.escape(record.figure)}</p>", table_html]
    page += [_image(path, f"{record.name}: {name}") for name, path in charts]
    markdown = [record.figure, table_md]
    markdown += [f"![{record.name} {name}]({os.path.relpath(path, run_dir)})" for name, path in charts]
    if files:
        links = ", ".join(
            f"<a href='{html.escape(target)}'>{html.escape(name)}</a>" for name, target in files
        )
        page.append(f"<p class='muted'>files: {links}</p>")
        markdown.append("files: " + ", ".join(f"[{name}]({target})" for name, target in files))
    return (
        f"{record.name}: {record.status.upper()}",
        "".join(page),
        "\n\n".join(part for part in markdown if part),
    )


def sections(evidence: dict[str, Any], run_dir: Path) -> list[tuple[str, str, str]]:
    """(title, html, markdown) per section, in reading order: the stages, the lineage, then each stage
    that has checks or charts, all rendered alike."""
    records = [StageRecord.from_json(stage) for stage in evidence["stages"]]
    out = [
        ("Stages", *_table(STAGE_COLUMNS, [record.row() for record in records])),
        ("Lineage", *_table(["what", "value"], list(evidence["lineage"].items()))),
    ]
    out += [section for record in records if (section := stage_section(record, run_dir)) is not None]
    skipped = [(r.name, r.figure) for r in records if r.status in {"skipped", "not run"}]
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
                "quarantine": quarantine.state(tags),
            }
        )
    if not rows:
        reporter.note(f"no version has served {config.name} yet")
        return rows
    serving = registry.alias_version(mlflow, config.model.name, config.alias)
    reporter.note(f"{config.model.name} in {config.name}: now version {serving.version if serving else '-'}")
    reporter.table(
        [
            "when",
            "action",
            "version",
            "previous",
            "gate",
            "loadtest",
            "rollout",
            "git sha",
            "image",
            "quarantine",
        ],
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
                r["quarantine"],
            )
            for r in rows
        ],
    )
    for line in quarantine.history_lines(mlflow, config.model.name):
        reporter.note(line)
    return rows
