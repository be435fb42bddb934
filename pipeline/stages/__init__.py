"""The stage table: one row per stage. The command line (`python -m pipeline STAGE`), the runner and `run`
(the whole pipeline, rows with `in_run`, in this order) are built from it.

Adding a stage is a module with `run(ctx)`, a row here and a line in noxfile.py's `STAGES` (CONTRIBUTING).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.stage import Stage, option

SERVICE_PORT, METRICS_PORT = 8000, 9000
FOLLOW_TIMEOUT_S = 1800.0

STAGES: tuple[Stage, ...] = (
    Stage(
        "train",
        "fit the model and log the run to MLflow",
        run="pipeline.stages.train:run",
        fresh=True,
        in_run=True,
    ),
    Stage(
        "export",
        "ONNX export with a parity gate; writes the card",
        run="pipeline.stages.export:run",
        options=(
            option(
                "--from-capture",
                action="store_true",
                help="also prove parity on the captured rows: the rows the service captured (capture.directory), redacted; a hashed or dropped "
                "feature takes the card's default, else the row is refused (counted)",
            ),
        ),
        fresh=True,
        in_run=True,
    ),
    Stage(
        "gate",
        "metric gates: absolute and against the version serving ENV",
        run="pipeline.stages.gate:run",
        in_run=True,
    ),
    Stage(
        "register",
        "register the exported model; alias ENV-candidate",
        run="pipeline.stages.register:run",
        options=(
            option(
                "--image",
                metavar="REF",
                help="record an image built elsewhere (repo@sha256:..., sha256:... or repo:tag)",
            ),
        ),
        in_run=True,
    ),
    Stage(
        "image",
        "build, smoke-test and (if configured) push the service image",
        run="pipeline.stages.image:run",
        in_run=True,
    ),
    Stage(
        "loadtest",
        "Locust against the service with the exported model; SLO gate (a pass of the same inputs is reused)",
        run="pipeline.stages.loadtest:run",
        options=(
            option("--host", metavar="URL", help="test the service already running at URL instead"),
            option(
                "--allow-remote", action="store_true", help="allow a --host that is not a loopback address"
            ),
            option(
                "--from-capture",
                action="store_true",
                help="send the captured rows instead of the evaluation rows: the rows the service captured (capture.directory), redacted; a hashed or dropped "
                "feature takes the card's default, else the row is refused (counted)",
            ),
        ),
        fresh=True,
        in_run=True,
    ),
    Stage(
        "shadow",
        "the candidate answers copies of live traffic while users get stable's answers; judge the pairs",
        run="pipeline.stages.shadow:run",
        options=(
            option(
                "--candidate-fault",
                metavar="FAULT",
                help="start the candidate with injected faults to prove the judge catches them (as rollout's: "
                "latency=200ms, latency=3ms@0.08, errors=0.2 or shift; refused for prod)",
            ),
        ),
        fresh=True,
        in_run=True,
    ),
    Stage(
        "rollout",
        "rehearse the rollout plan locally (Caddy + live traffic + analysis); promote or roll back",
        run="pipeline.stages.rollout:run",
        options=(
            option(
                "--strategy",
                choices=["canary", "blue-green"],
                sets="rollout.strategy",
                help="override rollout.strategy for this run",
            ),
            option(
                "--candidate-fault",
                metavar="FAULT",
                help="start the candidate with injected faults to prove the analysis catches them: "
                "latency=200ms, errors=0.2 or shift (inverted scores: healthy by HTTP, different predictions; "
                "refused for prod)",
            ),
            option(
                "--approve",
                action="store_true",
                help="approve the switch when blue_green.auto_promotion is off",
            ),
            option(
                "--target",
                choices=["local", "kubernetes"],
                default="local",
                help="local: rehearse here with Caddy (default); kubernetes: follow the Rollout in the cluster "
                "of KUBECONFIG until Healthy or Degraded",
            ),
            option(
                "--timeout",
                type=float,
                default=FOLLOW_TIMEOUT_S,
                help="seconds to follow the cluster's Rollout (default: %(default)s)",
            ),
            option(
                "--revision",
                metavar="SHA",
                help="with --target kubernetes: the GitOps commit to follow (the one `promote --gitops` pushed); "
                "waits until Argo CD has synced it and the Rollout carries its image and model version "
                "(default: the last promotion commit of ENV in the workspace's git)",
            ),
        ),
        fresh=True,
        in_run=True,
    ),
    Stage(
        "promote",
        "move alias ENV to the candidate whose gate passed",
        run="pipeline.stages.promote:run",
        options=(
            option("--to-version", metavar="N", help="promote registry version N instead of the candidate"),
            option(
                "--gitops",
                action="store_true",
                help="also commit the change to k8s/overlays/ENV and push it to deploy.gitops (Argo CD syncs)",
            ),
            option(
                "--unquarantine",
                action="store_true",
                help="ship a release a failed rollout or a rollback rejected (needs --reason)",
            ),
            option("--reason", metavar="TEXT", help="why: recorded in the registry and the GitOps commit"),
            option(
                "--release-commit",
                metavar="SHA",
                help="the merge of a release pull request (promotion.approval: pull_request): check the policy "
                "again, move alias ENV to the version its release.yaml deploys, tag it <model>/<env>/v<semver>",
            ),
        ),
        in_run=True,
    ),
    Stage(
        "rollback",
        "move alias ENV back to the version that served before",
        run="pipeline.stages.promote:run_rollback",
        options=(
            option(
                "--gitops",
                action="store_true",
                help="also revert the last promotion commit of ENV and push it",
            ),
            option(
                "--rehearse",
                action="store_true",
                help="rehearse the way back here first (Caddy + traffic; no steps or analysis within "
                "rollout.rollback_window) and report the time to restore",
            ),
            option(
                "--reason",
                metavar="TEXT",
                help="why the release is rolled back: recorded with its quarantine (default: rolled back)",
            ),
        ),
    ),
    Stage(
        "freeze",
        "stop every promotion into ENV until lifted (a registry tag, no commit)",
        run="pipeline.stages.freeze:run",
        options=(
            option("--reason", metavar="TEXT", help="why ENV is frozen (required unless --lift)"),
            option("--lift", action="store_true", help="lift the freeze"),
        ),
        exclusive=(("--reason", "--lift"),),
    ),
    Stage(
        "serve",
        "serve the model of ENV on 127.0.0.1 until Ctrl-C",
        run="pipeline.stages.serve:run",
        options=(
            option("--port", type=int, default=SERVICE_PORT, help="port to listen on (default: %(default)s)"),
            option(
                "--metrics-port",
                type=int,
                default=METRICS_PORT,
                help="port of GET /metrics, never the API's (default: %(default)s)",
            ),
        ),
        recorded=False,
    ),
    Stage(
        "drift",
        "input drift (PSI, KS per feature) and score shift of a sample vs the model card's reference",
        run="pipeline.stages.drift:run",
        options=(
            option("--input", type=Path, metavar="FILE", help="rows to check: CSV with a header, or JSONL"),
            option(
                "--url",
                metavar="URL",
                help="read the bin counters of a running service from its metrics port (URL/metrics, e.g. "
                f"http://127.0.0.1:{METRICS_PORT})",
            ),
            option(
                "--allow-remote", action="store_true", help="allow a --url that is not a loopback address"
            ),
            option(
                "--from-capture",
                action="store_true",
                help="check the captured rows instead: the rows the service captured (capture.directory), redacted; a hashed or dropped "
                "feature takes the card's default, else the row is refused (counted)",
            ),
        ),
        exclusive=(("--input", "--url", "--from-capture"),),
    ),
    Stage(
        "feedback",
        "import labels (CSV or Parquet: request_id, label) for captured requests into the label store; "
        "a malformed file stores nothing",
        run="pipeline.stages.feedback:run",
        options=(
            option(
                "--labels",
                type=Path,
                required=True,
                metavar="FILE",
                help="a .csv with the header request_id,label or a .parquet with those columns",
            ),
        ),
    ),
    Stage(
        "evaluate",
        "live quality: captured rows joined with their labels, per version, judged by gates.metrics (absolute "
        "and against the version's offline evaluation); the CBPE estimate before labels arrive",
        run="pipeline.stages.evaluate:run",
    ),
    Stage(
        "batch",
        "score a table (CSV or Parquet) with the release serving ENV: the service's input contract, rejects "
        "with reasons, drift, bounds, and parity with the service's answers",
        run="pipeline.stages.batch:run",
        options=(
            option(
                "--input",
                type=Path,
                required=True,
                metavar="PATH",
                help="a CSV or Parquet file, or a folder of parts",
            ),
            option(
                "--output",
                type=Path,
                required=True,
                metavar="PATH",
                help="a new folder: scores/, rejects/, batch.json, and _SUCCESS when every check passed "
                "({date} becomes today's UTC date)",
            ),
            option(
                "--engine", choices=["embedded", "spark"], sets="batch.engine", help="override batch.engine"
            ),
            option(
                "--master",
                metavar="URL",
                sets="batch.spark.master",
                help="the Spark master (local[N], spark://HOST:PORT, k8s://..., yarn); default batch.spark.master",
            ),
            option(
                "--url",
                metavar="URL",
                help="check parity against the service running at URL instead of starting one on the release",
            ),
            option(
                "--allow-remote", action="store_true", help="allow a --url that is not a loopback address"
            ),
        ),
    ),
    Stage(
        "monitor",
        "the release serving ENV checked as the schedule does: drift and live quality (evaluate)",
        run="pipeline.stages.monitor:run",
        options=(
            option(
                "--report-to-github",
                action="store_true",
                help="a failing verdict opens or updates ENV's monitor issue and, where monitoring.retrain "
                "allows, dispatches cd.yml (GITHUB_REPOSITORY and GITHUB_TOKEN from the workflow)",
            ),
        ),
    ),
)

RUN_ORDER = tuple(stage.name for stage in STAGES if stage.in_run)
"""The stages of `run` (the whole pipeline), in order; it stops at the first failure."""


def stage_named(name: str) -> Stage:
    return next(stage for stage in STAGES if stage.name == name)
