"""`python -m pipeline STAGE --env ENV`: the one entry point that nox sessions and workflows call.

Exit codes: 0 success, 1 a stage or gate failed, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import yaml

from pipeline.config import Config, ConfigError, diff, json_schema, load_config
from pipeline.errors import StageError, StageSkipped
from pipeline.reporter import Reporter
from pipeline.workspace import Workspace

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SCHEMA_FILE = "schema.json"
RUN_ORDER = ("train", "export", "gate", "register", "promote")
"""The stages of `run` (the whole pipeline), in order; it stops at the first failure."""


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--env", default="dev", help="environment: a file environments/ENV.yaml (default: dev)"
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value for this run, e.g. --set gates.mode=warn (repeatable; VALUE is YAML)",
    )
    common.add_argument(
        "--workdir", type=Path, default=Path(), help="workspace root (default: current folder)"
    )
    common.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="folder of the environment files (default: WORKDIR/environments)",
    )
    fresh = argparse.ArgumentParser(add_help=False)
    fresh.add_argument("--fresh", action="store_true", help="redo the work even when valid artifacts exist")

    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Run one stage of the model pipeline for an environment described by environments/ENV.yaml.",
        epilog="Exit codes: 0 success, 1 a stage or gate failed, 2 a usage or configuration error.",
    )
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    config = stages.add_parser("config", parents=[common], help="print the resolved config of an environment")
    config.add_argument(
        "--diff", metavar="OTHER", help="print only what differs from environment OTHER, key by key"
    )
    schema = stages.add_parser(
        "schema", parents=[common], help="write environments/schema.json from the config models"
    )
    schema.add_argument("--check", action="store_true", help="fail when the committed schema.json is stale")
    stages.add_parser("train", parents=[common, fresh], help="fit the model and log the run to MLflow")
    stages.add_parser(
        "export", parents=[common, fresh], help="ONNX export with a parity gate; writes the card"
    )
    stages.add_parser(
        "gate", parents=[common], help="metric gates: absolute and against the version serving ENV"
    )
    stages.add_parser("register", parents=[common], help="register the exported model; alias ENV-candidate")
    promote = stages.add_parser(
        "promote", parents=[common], help="move alias ENV to the candidate whose gate passed"
    )
    promote.add_argument(
        "--to-version", metavar="N", help="promote registry version N instead of the candidate"
    )
    stages.add_parser(
        "rollback", parents=[common], help="move alias ENV back to the version that served before"
    )
    serve = stages.add_parser(
        "serve", parents=[common], help="serve the model of ENV on 127.0.0.1 until Ctrl-C"
    )
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    stages.add_parser("run", parents=[common, fresh], help=f"every stage in order: {', '.join(RUN_ORDER)}")
    return parser


def _stage_calls(
    args: argparse.Namespace,
) -> list[tuple[str, Callable[[Config, Workspace, Reporter], object]]]:
    # Stage modules import MLflow, scikit-learn and onnxruntime: load them only for the stages that run.
    from pipeline import export, gate, promote, register, serving, train  # noqa: PLC0415

    fresh = bool(getattr(args, "fresh", False))
    calls: dict[str, Callable[[Config, Workspace, Reporter], object]] = {
        "train": lambda c, w, r: train.train(c, w, r, fresh=fresh),
        "export": lambda c, w, r: export.export(c, w, r, fresh=fresh),
        "gate": gate.gate,
        "register": register.register,
        "promote": lambda c, w, r: promote.promote(c, w, r, to_version=getattr(args, "to_version", None)),
        "rollback": promote.rollback,
        "serve": lambda c, w, r: serving.serve(c, w, r, port=args.port),
    }
    if args.stage == "run":
        return [(name, calls[name]) for name in RUN_ORDER]
    return [(args.stage, calls[args.stage])]


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (CI cancelling a job, `timeout`) unwinds like Ctrl-C, so every process a stage started is stopped.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    reporter = Reporter()
    workdir: Path = args.workdir
    config_dir: Path = args.config_dir or workdir / "environments"
    # MLflow and alembic narrate every database migration at INFO; keep the pipeline's own output readable.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.stage == "schema":
            return _schema(config_dir / SCHEMA_FILE, check=args.check, reporter=reporter)
        config = load_config(args.env, config_dir, args.overrides)
        if args.stage == "config":
            return _config(config, config_dir, args, reporter)
        workspace = Workspace(workdir.resolve())
        for name, call in _stage_calls(args):
            try:
                with reporter.stage(name, config.name):
                    result = call(config, workspace, reporter)
                    if getattr(result, "status", None) == "fail":
                        failures = "; ".join(getattr(result, "failures", []))
                        raise StageError(f"{name} failed for {config.name}: {failures}")
            except StageSkipped as exc:
                if args.stage != "run":
                    raise StageError(f"{name} cannot run here: {exc}") from None
                reporter.line(f"SKIPPED {name} [{config.name}]: {exc}")
    except ConfigError as exc:
        reporter.error(f"{exc}")
        return EXIT_USAGE
    except StageError as exc:
        later = "" if args.stage != "run" else "; later stages were not run"
        reporter.error(f"{exc}{later}")
        return EXIT_FAILED
    return EXIT_OK


def _config(config: Config, config_dir: Path, args: argparse.Namespace, reporter: Reporter) -> int:
    if args.diff is None:
        reporter.line(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False).rstrip())
        return EXIT_OK
    other = load_config(args.diff, config_dir)
    changes = diff(config, other)
    if not changes:
        reporter.line(f"{config.name} and {other.name} resolve to the same config")
        return EXIT_OK
    reporter.table(
        ["key", config.name, other.name], [(k, json.dumps(a), json.dumps(b)) for k, a, b in changes]
    )
    return EXIT_OK


def _schema(path: Path, *, check: bool, reporter: Reporter) -> int:
    text = json.dumps(json_schema(), indent=2) + "\n"
    if check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            reporter.error(f"{path} is stale; regenerate it with `python -m pipeline schema`")
            return EXIT_FAILED
        reporter.line(f"{path} is up to date")
        return EXIT_OK
    path.write_text(text, encoding="utf-8")
    reporter.line(f"wrote {path}")
    return EXIT_OK
