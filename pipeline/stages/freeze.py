"""freeze: stop every promotion into the environment until a person lifts it, without a commit.

The switch is the registered-model tag `freeze.<env>` (JSON: reason, time, who) in the environment's
registry: this command sets it, and so can anyone with the MLflow UI. `promote` reads it as a clause of
the promotion policy (release/policy.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.adapters import registry
from pipeline.errors import StageError
from pipeline.release.promotion import set_freeze
from pipeline.stage import StageContext, StageResult


def run(ctx: StageContext) -> StageResult:
    c, w, r, args = ctx.config, ctx.workspace, ctx.reporter, ctx.args
    if not args.lift and not (args.reason or "").strip():
        raise StageError(f"freeze needs --reason TEXT (why {c.name} is frozen), or --lift to lift it")
    mlflow = registry.client(c, w)
    with registry.writing(c, w):
        headline = set_freeze(
            mlflow, c, reason=args.reason, lift=args.lift, now=datetime.now(UTC), reporter=r
        )
    return StageResult(headline=headline)
