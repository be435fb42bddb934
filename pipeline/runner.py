"""The runner: runs the stages of the table for one environment, records each result, and closes a whole
run with the summary and the release-evidence report.

It is the `StageContext` every stage's `run` is handed: a stage asks it for the model folder it works on
(`exported_model()` trains and exports first when the current config has no export yet; `served_model()`
reads the alias), and for a follow-up stage (`run_stage`: the rollout promotes after a rehearsal run alone).
A failed result stops the run; a stage that cannot run here is skipped inside a whole run, an error alone.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from pipeline import evidence
from pipeline.config import Config, ConfigError
from pipeline.console import Reporter
from pipeline.errors import StageError, StageSkipped
from pipeline.stage import Stage, StageResult
from pipeline.stages import RUN_ORDER, stage_named
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from pipeline.artifacts import ModelDir


class Runner:
    """Runs stages of the table for one environment; the `StageContext` every stage's `run` is handed."""

    def __init__(
        self,
        config: Config,
        workspace: Workspace,
        reporter: Reporter,
        *,
        whole_run: bool,
        fresh: bool = False,
    ) -> None:
        self.config, self.workspace, self.reporter = config, workspace, reporter
        self.whole_run = whole_run
        self.args = argparse.Namespace(fresh=fresh)
        """The options of the stage running now (the command line's, or its defaults inside `run`)."""
        self.records: list[evidence.StageRecord] = []
        self._model: ModelDir | None = None

    # -- what every stage goes through ---------------------------------------------------------------

    def run_stage(self, name: str, **args: Any) -> StageResult | None:
        """Run the stage of the table named `name`: its options are their defaults, `args` overriding them;
        `fresh` carries over from the stage that asked (a fresh load test retrains freshly)."""
        stage = stage_named(name)
        outer = self.args
        self.args = stage.defaults(**{"fresh": outer.fresh, **args})
        try:
            return self._run(stage)
        finally:
            self.args = outer

    def _run(self, stage: Stage) -> StageResult | None:
        """Run one stage in its frame and record it (also when it fails: the report shows the failure).

        A failed result raises StageError; a stage that cannot run here is recorded as skipped inside a
        whole run (None is returned) and is an error when run alone: it did not do its job."""
        run, name = stage.function(), stage.name
        if not stage.recorded:
            return run(self)
        started = time.perf_counter()
        try:
            with self.reporter.stage(name, self.config.name):
                result = run(self)
                assert result is not None, f"stage {name} returned no result"
                if result.status == "fail":
                    self._record(name, "failed", started, result.headline, result)
                    raise StageError(f"{name} failed for {self.config.name}: {'; '.join(result.failures)}")
        except StageSkipped as exc:
            if not self.whole_run:
                raise StageError(f"{name} cannot run here: {exc}") from None
            self.reporter.line(f"SKIPPED {name} [{self.config.name}]: {exc}")
            self._record(name, "skipped", started, str(exc))
            return None
        except (StageError, ConfigError) as exc:
            if not any(record.name == name for record in self.records):
                self._record(name, "failed", started, str(exc))
            raise
        self._record(name, "reused" if result.reused else "passed", started, result.headline, result)
        return result

    def _record(
        self, name: str, status: str, started: float, figure: str, result: StageResult | None = None
    ) -> None:
        artifacts = {key: str(path) for key, path in (result.artifacts if result else {}).items()}
        seconds = time.perf_counter() - started
        checks = list(result.checks) if result else []
        self.records.append(evidence.StageRecord(name, status, seconds, figure, artifacts, checks))

    @property
    def model(self) -> ModelDir:
        """The folder the current config, data and code map to (computed once per invocation)."""
        from pipeline.artifacts import current_model_dir  # noqa: PLC0415  (loads the ML libraries)

        if self._model is None:
            self._model = current_model_dir(self.config, self.workspace)
        return self._model

    def exported_model(self) -> ModelDir:
        """The current export; train and export first when there is none, so a stage that serves the
        model (load test, image, rollout, serve) also works on a fresh clone."""
        if not self.model.exported():
            self.reporter.note(
                f"no export of the current {self.config.name} config yet: running train and export first"
            )
            self.run_stage("train")
            self.run_stage("export")
        return self.model

    def served_model(self) -> ModelDir:
        """The version serving the environment (alias `<env>`), else the current export."""
        from pipeline.adapters import registry  # noqa: PLC0415  (MLflow is a slow import)

        serving = registry.alias_model_dir(self.config, self.workspace, self.config.alias)
        if serving is None:
            self.reporter.note(f"no version holds alias {self.config.alias!r}; using the current export")
            return self.exported_model()
        model, version = serving
        self.reporter.note(
            f"version {version} serves {self.config.name} (alias {self.config.alias!r}): {model.path}"
        )
        return model

    def fallback_model(self, model: ModelDir) -> ModelDir | None:
        """The model `service.fallback` serves next to `model`: a named export, or the latest other
        version that held alias `<env>`; None when the section is unset or no such version exists yet."""
        fallback = self.config.service.fallback
        if fallback is None:
            return None
        if fallback.source == "export":
            assert fallback.version is not None  # the config's validator
            folder = self.workspace.model_dir(self.config, fallback.version)
            if not folder.exported():
                raise ConfigError(
                    f"service.fallback.version: no export at {folder.path}; name a folder under "
                    f"{folder.path.parent} that holds model.json, or use source: previous"
                )
            return folder
        from pipeline.adapters import registry  # noqa: PLC0415  (MLflow is a slow import)
        from pipeline.release.compatibility import same_requests  # noqa: PLC0415

        for folder, version in registry.previous_model_dirs(self.config, self.workspace, model):
            # A breaking release cannot fall back on a version that takes other requests: the next older.
            problem = same_requests(model.read_card(), folder.read_card())
            if problem is None:
                self.reporter.note(
                    f"fallback: version {version} ({folder.version}), which served {self.config.name} before"
                )
                return folder
            self.reporter.warn(f"fallback: version {version} skipped: {problem} (a breaking release)")
        self.reporter.note(
            f"no earlier version of these requests served {self.config.name}: serving without a fallback"
        )
        return None

    def run_all(self) -> None:
        """Every stage of RUN_ORDER, stopping at the first failure."""
        for name in RUN_ORDER:
            self.run_stage(name)

    # -- closing a whole run ---------------------------------------------------------------------------

    def close(self) -> None:
        """After `run`, passed or not: the summary table and the release-evidence report."""
        c, w, r = self.config, self.workspace, self.reporter
        done = {record.name for record in self.records}
        self.records.extend(
            evidence.StageRecord(name, "not run", 0.0, "an earlier stage failed")
            for name in RUN_ORDER
            if name not in done
        )
        r.line(f"== summary [{c.name}] run {w.run_id}")
        r.table(evidence.STAGE_COLUMNS, [record.row() for record in self.records])
        reused = [record.name for record in self.records if record.status == "reused"]
        if reused:
            r.note(f"reused valid artifacts for: {', '.join(reused)} (--fresh redoes them)")
        evidence.write_report(c, w, self.records, r)
