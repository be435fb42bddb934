"""`python -m pipeline STAGE --env ENV`: the one entry point that nox sessions and workflows call.

Exit codes: 0 success, 1 a stage or gate failed, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import yaml

from pipeline import evidence
from pipeline.config import (
    REFERENCE_FILE,
    Config,
    ConfigError,
    config_reference,
    diff,
    json_schema,
    load_config,
)
from pipeline.console import Reporter
from pipeline.errors import NoCluster, StageError
from pipeline.runner import Runner
from pipeline.stages import RUN_ORDER, STAGES, stage_named
from pipeline.workspace import Workspace

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SCHEMA_FILE = "schema.json"


def _add_init(stages: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = stages.add_parser(
        "init",
        help="make this fork ship your model: its name, data, task and Argo CD repository, then regenerate "
        "what derives from environments/ (refuses a dirty tree; a second run changes nothing)",
    )
    init.add_argument("--name", required=True, help="model name: registry, artifact folder and service name")
    init.add_argument(
        "--csv", metavar="PATH", help="the training data (CSV, or .parquet), inside the repository"
    )
    init.add_argument("--target", metavar="COLUMN", help="the label column of --csv")
    init.add_argument(
        "--task", choices=["binary", "multiclass", "regression"], help="model.task (default: inferred)"
    )
    init.add_argument(
        "--workdir", type=Path, default=Path(), help="repository root (default: current folder)"
    )
    init.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="folder of the environment files (default: WORKDIR/environments)",
    )


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
    fresh.add_argument(
        "--fresh", action="store_true", help="redo the work even when valid results of the same inputs exist"
    )

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
        "schema",
        parents=[common],
        help="write environments/schema.json and docs/config-reference.md from the config models",
    )
    schema.add_argument("--check", action="store_true", help="fail when either committed file is stale")
    _add_init(stages)
    render = stages.add_parser(
        "render",
        parents=[common],
        help="render k8s/overlays/* and k8s/argocd/* from every environment file",
    )
    render.add_argument(
        "--check",
        action="store_true",
        help="write nothing; fail naming each stale file, then validate every overlay offline",
    )
    for stage in STAGES:
        stage_parser = stages.add_parser(
            stage.name, parents=[common, fresh] if stage.fresh else [common], help=stage.help
        )
        stage.add_options(stage_parser)
    stages.add_parser(
        "history", parents=[common], help="which versions served ENV, when, with what evidence (newest first)"
    )
    stages.add_parser("run", parents=[common, fresh], help=f"every stage in order: {', '.join(RUN_ORDER)}")
    # Rollout judge calibration (logic in pipeline/calibrate.py).
    calibrate = stages.add_parser(
        "calibrate",
        parents=[common],
        help="rehearse healthy retrains with tail noise, then each real fault: false aborts and detections",
    )
    calibrate.add_argument(
        "--healthy", type=int, default=8, metavar="K", help="healthy retrains to rehearse (default: 8)"
    )
    calibrate.add_argument(
        "--busy-cores", type=int, default=0, metavar="N", help="keep N cores busy meanwhile (default: 0)"
    )
    return parser


def _option_overrides(args: argparse.Namespace) -> list[str]:
    """The config values a stage's options override (e.g. `rollout --strategy`), as `--set` would."""
    stage = next((stage for stage in STAGES if stage.name == args.stage), None)
    options = stage.options if stage is not None else ()
    return [
        f"{item.sets}={getattr(args, item.dest())}"
        for item in options
        if item.sets is not None and getattr(args, item.dest()) is not None
    ]


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (CI cancelling a job, `timeout`) unwinds like Ctrl-C, so every process a stage started is stopped.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911, PLR0912  (one return per exit path)
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    reporter = Reporter()
    workdir: Path = args.workdir
    config_dir: Path = args.config_dir or workdir / "environments"
    # MLflow and alembic narrate every database migration at INFO; keep the pipeline's own output readable.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.stage == "schema":
            return _schema(
                config_dir / SCHEMA_FILE, workdir / REFERENCE_FILE, check=args.check, reporter=reporter
            )
        if args.stage == "render":  # every environment at once: no single config to load
            return _render(workdir, config_dir, check=args.check, reporter=reporter)
        if args.stage == "init":
            from pipeline import init  # noqa: PLC0415  (renders k8s/: the deploy modules)

            init.run(
                workdir.resolve(),
                config_dir,
                reporter,
                name=args.name,
                data=args.csv,
                target=args.target,
                task=args.task,
            )
            return EXIT_OK
        config = load_config(args.env, config_dir, [*args.overrides, *_option_overrides(args)])
        if args.stage == "config":
            return _config(config, config_dir, args, reporter)
        workspace = Workspace(workdir.resolve())
        if args.stage == "history":
            evidence.history(config, workspace, reporter)
            return EXIT_OK
        if args.stage == "calibrate":
            return _calibrate(args, config_dir, workspace, reporter)
        whole_run = args.stage == "run"
        runner = Runner(config, workspace, reporter, whole_run=whole_run, fresh=getattr(args, "fresh", False))
        usage_error = False
        try:
            if whole_run:
                runner.run_all()
            else:
                stage = stage_named(args.stage)
                runner.run_stage(
                    stage.name, **{item.dest(): getattr(args, item.dest()) for item in stage.options}
                )
        except ConfigError:
            usage_error = True  # a config a stage rejects (e.g. model.params) is bad input: write nothing
            raise
        finally:
            if whole_run and not usage_error:
                runner.close()
    except (ConfigError, NoCluster) as exc:
        reporter.error(f"{exc}")
        return EXIT_USAGE
    except StageError as exc:
        later = "" if args.stage != "run" else "; later stages were not run"
        reporter.error(f"{exc}{later}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        reporter.error("interrupted; every process the stage started was stopped")
        return EXIT_INTERRUPTED
    return EXIT_OK


def _config(config: Config, config_dir: Path, args: argparse.Namespace, reporter: Reporter) -> int:
    if args.diff is None:
        reporter.line(
            yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False).rstrip()
        )
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


def _schema(schema_path: Path, reference_path: Path, *, check: bool, reporter: Reporter) -> int:
    files = {schema_path: json.dumps(json_schema(), indent=2) + "\n", reference_path: config_reference()}
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text("utf-8") != text]
    if check:
        for path in stale:
            reporter.error(f"{path} is stale; regenerate it with `python -m pipeline schema`")
        if not stale:
            reporter.line(f"{schema_path} and {reference_path} are up to date")
        return EXIT_FAILED if stale else EXIT_OK
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        reporter.line(f"wrote {path}")
    return EXIT_OK


def _render(workdir: Path, config_dir: Path, *, check: bool, reporter: Reporter) -> int:
    from pipeline.deploy.render import render  # noqa: PLC0415  (validation needs the k8s dependency group)

    return EXIT_OK if render(workdir.resolve(), config_dir, check=check, reporter=reporter) else EXIT_FAILED


def _calibrate(args: argparse.Namespace, config_dir: Path, workspace: Workspace, reporter: Reporter) -> int:
    from pipeline import calibrate  # noqa: PLC0415  (starts services, Caddy and Locust)

    if args.healthy < 1 or args.busy_cores < 0:
        raise ConfigError("calibrate: --healthy must be at least 1 and --busy-cores at least 0")
    result = calibrate.calibrate(
        lambda extra: load_config(args.env, config_dir, [*args.overrides, *extra]),
        workspace.root,
        reporter,
        healthy=args.healthy,
        busy=args.busy_cores,
    )
    for failure in result.failures:
        reporter.error(failure)
    return EXIT_OK if result.status == "pass" else EXIT_FAILED
