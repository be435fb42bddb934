"""`python -m pipeline init --name NAME [--csv PATH --target COL] [--task T]`: make a fresh fork of the
template the fork's own model (docs/bring-your-model.md).

It edits `environments/base.yaml` as text, so its comments stay: `model.name` (the registered model,
artifact folder and service name), `model.task`, the `data:` section, the `gates:` of a task other than
binary, and `deploy.argocd.repo_url` from the `origin` remote. In the other environment files it renames
a `model.name` they set and, for a task other than binary, drops their `gates:` (they name the binary
metrics). Then it regenerates what derives from the environments (k8s/overlays, k8s/argocd,
schema.json, docs/config-reference.md).

Everything is checked and computed before anything is written: bad input (a `--task` the data's target
does not fit included), an environment that would not load, or a dirty git tree (when something would
change) leave the tree as it was. Run twice, the second run finds nothing to change.

Just over 400 lines on purpose: the text edits sit beside the checks that refuse a request before any
file is written.
"""

from __future__ import annotations

import csv
import importlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import (
    BASE_FILE,
    REFERENCE_FILE,
    Config,
    ConfigError,
    DataSpec,
    Task,
    config_reference,
    json_schema,
    known_environments,
    load_config,
)
from pipeline.config.models import ModelSpec
from pipeline.console import Reporter
from pipeline.deploy.names import TEMPLATE_REPOSITORY
from pipeline.deploy.render import render_all, stale_files, write_files

TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")
SCHEMA_FILE = "schema.json"
COMMENT_COLUMN = 38
"""Where base.yaml's end-of-line comments start (the column its keys are aligned to)."""
TASK_GATES = {
    # Starting bounds a fork tightens once it knows its model's figures (docs/bring-your-model.md).
    "multiclass": [
        "  metrics:                            # bounds are inclusive; deltas are in the metric's better direction",
        "    accuracy:",
        "      vs_champion: {min_delta: -0.01}  # at most 0.01 worse than the version now serving",
        "    f1_macro:",
        "      vs_champion: {min_delta: -0.01}",
        "    log_loss:",
        "      vs_champion: {min_delta: -0.02}",
    ],
    "regression": [
        "  metrics:                            # bounds are inclusive; deltas are in the metric's better direction",
        "    r2:",
        "      min: 0.0                        # better than predicting the mean",
        "      vs_champion: {min_delta: -0.01}  # at most 0.01 worse than the version now serving",
    ],
}


@dataclass(frozen=True)
class InitRequest:
    name: str
    data_path: Path | None = None
    """The data file, relative to the repository root."""
    target: str | None = None
    task: Task | None = None


@dataclass(frozen=True)
class InitResult:
    changed: list[str]
    """Files written, relative to the repository root; empty when everything already matched."""
    repo_url: str | None
    """The Argo CD repository URL set from `origin`, or None when origin is not a hosted repository."""


class DirtyTree(ConfigError):
    """The git tree has uncommitted changes and init would change files: nothing is written."""


def check_request(
    root: Path, name: str, data: str | None, target: str | None, task: str | None
) -> InitRequest:
    """The arguments, checked against the model-name pattern and the data file; ConfigError naming the fix."""
    pattern = ModelSpec.model_json_schema()["properties"]["name"]["pattern"]
    if not re.fullmatch(pattern, name):
        msg = (
            f"--name {name!r}: a model name is lowercase letters, digits and dashes, starting with a letter or "
            f"digit, at most 63 characters (model.name in environments/{BASE_FILE}, pattern {pattern})"
        )
        raise ConfigError(msg)
    checked_task = next((known for known in TASKS if known == task), None)
    if task is not None and checked_task is None:
        raise ConfigError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    if (data is None) != (target is None):
        raise ConfigError("--csv and --target go together: the data file and the name of its label column")
    if data is None or target is None:
        return InitRequest(name, task=checked_task)
    path = (root / data).resolve()
    try:
        relative = path.relative_to(root.resolve())
    except ValueError:
        msg = f"--csv {data}: the file must be inside the repository ({root}), where CI and `nox -s train` find it"
        raise ConfigError(msg) from None
    if not path.is_file():
        raise ConfigError(f"--csv {data}: no such file (under {root})")
    columns = _columns(path)
    if target not in columns:
        raise ConfigError(
            f"--target {target!r}: no such column in {data} (columns: {', '.join(columns) or 'none'})"
        )
    if len(columns) < 2:
        raise ConfigError(f"--csv {data}: only the target column {target!r}; the model needs feature columns")
    return InitRequest(name, relative, target, checked_task)


def _columns(path: Path) -> list[str]:
    """The data file's column names: a CSV's header row, or a Parquet file's schema."""
    if path.suffix == ".parquet":
        try:  # Parquet support is optional: pyarrow reads the schema without the rows
            parquet = importlib.import_module("pyarrow.parquet")
        except ImportError:
            raise ConfigError(f"--csv {path.name}: reading Parquet needs pyarrow installed") from None
        return [str(name) for name in parquet.read_schema(path).names]
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--csv {path.name}: cannot read a CSV header: {exc}") from None
    return [column.strip() for column in header]


def origin_repo_url(root: Path) -> str | None:
    """The fork's hosted repository from `git remote get-url origin`; None for a local path, no origin, or
    the template's own repository (its Argo CD URL stays a placeholder)."""
    done = subprocess.run(
        ["git", "remote", "get-url", "origin"], cwd=root, capture_output=True, text=True, check=False
    )
    url = done.stdout.strip()
    if done.returncode != 0 or ("://" not in url and "@" not in url) or TEMPLATE_REPOSITORY in url:
        return None
    return url


# --- editing base.yaml as text ----------------------------------------------------------------------

_TOP_KEY = re.compile(r"^[A-Za-z_][\w-]*:")


def _line(key_part: str, comment: str | None) -> str:
    if comment is None:
        return key_part
    return f"{key_part.ljust(COMMENT_COLUMN - 1)} {comment}"


def _section(lines: list[str], key: str) -> tuple[int, int]:
    """[start, end) of a top-level section, trailing blank lines excluded; ConfigError when absent."""
    start = next((i for i, line in enumerate(lines) if line.split("#")[0].rstrip() == f"{key}:"), None)
    if start is None:
        start = next((i for i, line in enumerate(lines) if line.startswith(f"{key}:")), None)
    if start is None:
        raise ConfigError(f"environments/{BASE_FILE}: no top-level '{key}:' section to edit")
    end = next((i for i in range(start + 1, len(lines)) if _TOP_KEY.match(lines[i])), len(lines))
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return start, end


def _set_key(
    lines: list[str], section: str, key: str, value: str, *, comment: str | None, after: str
) -> None:
    """Set `section.key` (two-space indent) to `value`, keeping its comment; insert it after `after`."""
    start, end = _section(lines, section)
    pattern = re.compile(rf"^  {re.escape(key)}:\s*([^#]*?)\s*(#.*)?$")
    for i in range(start + 1, end):
        found = pattern.match(lines[i])
        if found:
            lines[i] = _line(f"  {key}: {value}", found.group(2) or comment)
            return
    anchor = next((i for i in range(start + 1, end) if lines[i].startswith(f"  {after}:")), start)
    lines.insert(anchor + 1, _line(f"  {key}: {value}", comment))


def _replace_section(lines: list[str], section: str, body: list[str]) -> None:
    """Replace the body of a top-level section (its first line and comment stay)."""
    start, end = _section(lines, section)
    lines[start + 1 : end] = body


def _set_repo_url(lines: list[str], url: str) -> None:
    start, end = _section(lines, "deploy")
    argocd = next((i for i in range(start + 1, end) if lines[i].startswith("  argocd:")), None)
    entry = _line(f"    repo_url: {json.dumps(url)}", "# Argo CD reads the overlays from here (origin)")
    if argocd is None:
        lines[end:end] = ["  argocd:", entry]
        return
    block_end = next((i for i in range(argocd + 1, end) if not lines[i].startswith("    ")), end)
    for i in range(argocd + 1, block_end):
        if lines[i].startswith("    repo_url:"):
            lines[i] = entry
            return
    lines.insert(argocd + 1, entry)


def edited_base(text: str, request: InitRequest, test_size: float, seed: int, repo_url: str | None) -> str:
    """base.yaml's text with the request applied; the same text again when it is applied already."""
    lines = text.splitlines()
    _set_key(lines, "model", "name", request.name, comment=None, after="name")
    if request.task is not None:
        _set_key(
            lines, "model", "task", request.task, comment="# binary | multiclass | regression", after="name"
        )
        if request.task in TASK_GATES:
            gates_start, gates_end = _section(lines, "gates")
            mode = [line for line in lines[gates_start + 1 : gates_end] if line.startswith("  mode:")]
            _replace_section(lines, "gates", mode + TASK_GATES[request.task])
    if request.data_path is not None:
        source = "parquet" if request.data_path.suffix == ".parquet" else "csv"
        _replace_section(
            lines,
            "data",
            [
                _line(f"  source: {source}", "# a file of your own, relative to the repository root"),
                f"  path: {json.dumps(request.data_path.as_posix())}",
                _line(f"  target: {json.dumps(request.target)}", "# the label column"),
                _line(f"  test_size: {test_size:g}", "# share of rows held out for evaluation (0-1)"),
                f"  seed: {seed}",
            ],
        )
    if repo_url is not None:
        _set_repo_url(lines, repo_url)
    return "\n".join(lines) + "\n"


def _has_section(lines: list[str], key: str) -> bool:
    return any(_TOP_KEY.match(line) and line.startswith(f"{key}:") for line in lines)


def edited_environment(text: str, request: InitRequest) -> str:
    """An environment file (not base.yaml) with the request applied: its own `model.name`, if it names
    one, renamed; for a task other than binary its `gates:` dropped, since they name another task's
    metrics (it inherits base.yaml's)."""
    lines = text.splitlines()
    if _has_section(lines, "model"):
        start, end = _section(lines, "model")
        if any(line.startswith("  name:") for line in lines[start + 1 : end]):
            _set_key(lines, "model", "name", request.name, comment=None, after="name")
    if request.task in TASK_GATES and _has_section(lines, "gates"):
        start, end = _section(lines, "gates")
        while end < len(lines) and not lines[end].strip():
            end += 1
        del lines[start:end]
    return "\n".join(lines) + "\n"


# --- the command ------------------------------------------------------------------------------------


def base_split(text: str) -> DataSpec:
    """base.yaml's data section (its split's `test_size` and `seed` stay when init rewrites it)."""
    lines = text.splitlines()
    if not _has_section(lines, "data"):
        return DataSpec()
    start, end = _section(lines, "data")
    section = yaml.safe_load("\n".join(lines[start:end]))["data"] or {}
    return DataSpec(test_size=section.get("test_size", 0.25), seed=section.get("seed", 42))


def dirty_files(root: Path) -> list[str]:
    """Tracked files with uncommitted changes (untracked files, such as a new data file, do not count)."""
    done = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError(
            f"{root}: not a git repository ({done.stderr.strip()}); init works on a clone of the template"
        )
    return [line[3:] for line in done.stdout.splitlines() if line.strip()]


def _check_data(root: Path, configs: list[Config], request: InitRequest) -> None:
    """Load each environment's data as `train` will, so a target the task does not fit (`--task binary`
    on three classes, a whole-number target with no `--task`) or too few rows to split is an error now
    rather than at the first training run."""
    from pipeline.ml.data import load_dataset  # noqa: PLC0415  (pandas and scikit-learn: only here)

    checked: list[tuple[DataSpec, Task | None]] = []
    for config in configs:
        if (config.data, config.model.task) in checked:
            continue
        checked.append((config.data, config.model.task))
        try:
            load_dataset(config.data, root, config.model.task)
        except ConfigError as exc:
            given = f"--task {request.task}" if request.task else "no --task given"
            fix = (
                f"; pass init --task {'|'.join(TASKS)} to match the data"
                if str(exc).startswith("model.task")
                else ""
            )
            raise ConfigError(f"{given} (environment {config.name}): {exc}{fix}") from None


def planned_files(root: Path, config_dir: Path, request: InitRequest, repo_url: str | None) -> dict[str, str]:
    """Path relative to `root` -> new text of every file init would change; each environment is loaded
    and rendered from the edited base.yaml in a scratch copy first, so a bad result stops here."""
    base_path = config_dir / BASE_FILE
    text = base_path.read_text(encoding="utf-8")
    split = base_split(text)
    base_text = edited_base(text, request, split.test_size, split.seed, repo_url)
    texts = {base_path: base_text}
    for env in known_environments(config_dir):
        path = config_dir / f"{env}.yaml"
        texts[path] = edited_environment(path.read_text(encoding="utf-8"), request)
    with tempfile.TemporaryDirectory(prefix="init-") as scratch:
        scratch_dir = Path(scratch) / "environments"
        shutil.copytree(config_dir, scratch_dir)
        for path, text in texts.items():
            (scratch_dir / path.name).write_text(text, encoding="utf-8")
        _check_data(root, [load_config(env, scratch_dir) for env in known_environments(scratch_dir)], request)
        rendered = render_all(root, scratch_dir)
    files = {path.resolve().relative_to(root.resolve()).as_posix(): text for path, text in texts.items()}
    files.update(rendered)
    schema_path = (config_dir / SCHEMA_FILE).resolve().relative_to(root.resolve()).as_posix()
    files[schema_path] = json.dumps(json_schema(), indent=2) + "\n"
    files[REFERENCE_FILE] = config_reference()
    changed = set(stale_files(root, files)) & set(files)
    return {name: text for name, text in files.items() if name in changed}


def init(root: Path, config_dir: Path, request: InitRequest, reporter: Reporter) -> InitResult:
    """Apply `request` to the repository at `root`; DirtyTree (nothing written) when files would change
    and the tree holds uncommitted changes."""
    repo_url = origin_repo_url(root)
    changes = planned_files(root, config_dir, request, repo_url)
    if not changes:
        reporter.line(f"nothing to change: the repository already ships {request.name!r} as asked")
        return InitResult([], repo_url)
    dirty = dirty_files(root)
    if dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        msg = (
            f"{root}: uncommitted changes ({shown}); commit or stash them first, so init's changes can be "
            "reviewed (and undone) on their own"
        )
        raise DirtyTree(msg)
    written = write_files(root, changes)
    for name in written:
        reporter.note(f"wrote {name}")
    return InitResult(written, repo_url)


def next_steps(request: InitRequest, result: InitResult) -> list[str]:
    steps = ["review the changes: git diff", f'commit them: git commit -am "init: {request.name}"']
    if request.data_path is not None:
        steps.append(f"commit the data file too if it is new: git add {request.data_path.as_posix()}")
    steps += [
        (
            'your own training code: set model.trainer: "package.module:function" in environments/base.yaml '
            "(docs/bring-your-model.md)"
        ),
        "train, gate and ship it locally: nox -s pipeline (or stage by stage: nox -s train, export, gate, ...)",
    ]
    if result.repo_url is None:
        steps.append(
            "no hosted `origin` remote: set deploy.argocd.repo_url in environments/base.yaml to your "
            "repository, or add the remote and run init again"
        )
    return steps


def run(
    root: Path,
    config_dir: Path,
    reporter: Reporter,
    *,
    name: str,
    data: str | None,
    target: str | None,
    task: str | None,
) -> None:
    """The CLI's init: check, apply, print what changed and the next steps."""
    request = check_request(root, name, data, target, task)
    result = init(root, config_dir, request, reporter)
    if result.changed:
        reporter.line(f"{request.name}: {len(result.changed)} files changed")
    reporter.line("next steps:")
    for number, step in enumerate(next_steps(request, result), start=1):
        reporter.line(f"  {number}. {step}")
