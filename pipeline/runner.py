"""The runner: runs stages for one environment, records each result, and does what no stage may do
behind the caller's back.

Stages do one job each and return a `StageResult`. The runner decides the rest: it trains and exports
before a stage that serves the model when the current config has no export yet, hands each stage the
model folder it works on, promotes after a rehearsal run alone passes, composes a GitOps promotion
(commit, then alias; revert if the alias does not move), and closes a whole run with the summary and
the release-evidence report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import evidence
from pipeline.config import Config, ConfigError
from pipeline.console import Reporter
from pipeline.errors import StageError, StageSkipped
from pipeline.stage import StageResult
from pipeline.workspace import Workspace

if TYPE_CHECKING:
    from pipeline.artifacts import ModelDir
    from pipeline.deploy import argo

RUN_ORDER = ("train", "export", "gate", "register", "image", "loadtest", "rollout", "promote")
"""The stages of `run` (the whole pipeline), in order; it stops at the first failure."""


@dataclass(frozen=True)
class Options:
    """What the command line asked of the stages (each stage reads only its own)."""

    fresh: bool = False
    image: str | None = None
    host: str | None = None
    allow_remote: bool = False
    to_version: str | None = None
    gitops: bool = False
    port: int = 8000
    metrics_port: int = 9000
    input_path: Path | None = None
    url: str | None = None
    candidate_fault: str | None = None
    approve: bool = False
    target: str = "local"
    timeout: float = 1800.0
    revision: str | None = None


class Runner:
    def __init__(
        self, config: Config, workspace: Workspace, reporter: Reporter, options: Options, *, whole_run: bool
    ) -> None:
        self.config, self.workspace, self.reporter = config, workspace, reporter
        self.options, self.whole_run = options, whole_run
        self.records: list[evidence.StageRecord] = []
        self._model: ModelDir | None = None

    # -- what every stage goes through ---------------------------------------------------------------

    def stage(self, name: str, call: Callable[[], StageResult]) -> StageResult | None:
        """Run one stage in its frame and record it (also when it fails: the report shows the failure).

        A failed result raises StageError; a stage that cannot run here is recorded as skipped inside a
        whole run (None is returned) and is an error when run alone: it did not do its job."""
        started = time.perf_counter()
        try:
            with self.reporter.stage(name, self.config.name):
                result = call()
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
        self.records.append(evidence.StageRecord(name, status, seconds, figure, artifacts))

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
            self.train()
            self.export()
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

        previous = registry.previous_model_dir(self.config, self.workspace, model)
        if previous is None:
            self.reporter.note(f"no earlier version served {self.config.name}: serving without a fallback")
            return None
        folder, version = previous
        self.reporter.note(
            f"fallback: version {version} ({folder.version}), which served {self.config.name} before"
        )
        return folder

    # -- the stages ------------------------------------------------------------------------------------

    def train(self) -> None:
        from pipeline.stages import train  # noqa: PLC0415  (stage modules import the ML libraries)

        c, w, r = self.config, self.workspace, self.reporter
        self.stage("train", lambda: train.train(c, w, r, model=self.model, fresh=self.options.fresh))

    def export(self) -> None:
        from pipeline.stages import export  # noqa: PLC0415

        c, w, r = self.config, self.workspace, self.reporter
        self.stage("export", lambda: export.export(c, w, r, model=self.model, fresh=self.options.fresh))

    def gate(self) -> None:
        from pipeline.stages import gate  # noqa: PLC0415

        c, w, r = self.config, self.workspace, self.reporter
        self.stage("gate", lambda: gate.gate(c, w, r, model=self.model, fresh=self.options.fresh))

    def register(self) -> None:
        from pipeline.stages import register  # noqa: PLC0415

        c, w, r = self.config, self.workspace, self.reporter
        self.stage("register", lambda: register.register(c, w, r, model=self.model, image=self.options.image))

    def image(self) -> None:
        from pipeline.adapters.docker_engine import require_daemon  # noqa: PLC0415
        from pipeline.stages import image  # noqa: PLC0415

        c, w, r = self.config, self.workspace, self.reporter

        def build() -> StageResult:
            require_daemon()  # skipped before any training when no engine answers
            model = self.exported_model()
            return image.image(c, w, r, model=model, fallback=self.fallback_model(model))

        self.stage("image", build)

    def loadtest(self) -> None:
        from pipeline.stages import loadtest  # noqa: PLC0415

        c, w, r, o = self.config, self.workspace, self.reporter, self.options
        model = self.exported_model()
        self.stage(
            "loadtest",
            lambda: loadtest.loadtest(
                c, w, r, model=model, host=o.host, allow_remote=o.allow_remote, fresh=o.fresh
            ),
        )

    def rollout(self) -> None:
        if self.options.target == "kubernetes":
            self._follow_cluster()
            return
        if self.options.revision is not None:
            raise ConfigError("--revision names the GitOps commit to follow: it needs --target kubernetes")
        from pipeline.adapters import registry  # noqa: PLC0415
        from pipeline.adapters.locust import LocustTraffic  # noqa: PLC0415
        from pipeline.rollout import rehearsal  # noqa: PLC0415

        c, w, r, o = self.config, self.workspace, self.reporter, self.options
        candidate = self.exported_model()
        stable = registry.alias_model_dir(c, w, c.alias)
        result = self.stage(
            "rollout",
            lambda: rehearsal.rollout(
                c,
                w,
                r,
                candidate=candidate,
                stable=stable,
                traffic=LocustTraffic(c, candidate),
                candidate_fault=o.candidate_fault,
                approve=o.approve,
                fresh=o.fresh,
            ),
        )
        if self.whole_run or result is None or o.candidate_fault:
            return  # inside `run`, the promote stage follows; a rehearsal with a fault promotes nothing
        registration = candidate.read_optional(candidate.registration)
        if registration is None:
            r.note("the candidate is not registered; alias unchanged (run register, then promote)")
            return
        self.promote(to_version=str(registration["model_version"]))

    def _follow_cluster(self) -> None:
        from pipeline.deploy import argo, gitops  # noqa: PLC0415
        from pipeline.deploy.render import application  # noqa: PLC0415

        c, w, r = self.config, self.workspace, self.reporter

        def follow() -> StageResult:
            target = self._pushed_release()
            app = application(c)["metadata"]

            def same_release(revision: str) -> bool:  # a later commit (another env's) that deploys ours
                release = gitops.release_at(w.root, c, revision)
                return release is not None and (release.reference, release.model_version) == (
                    target.image,
                    target.model_version,
                )

            state = argo.follow_rollout(
                c,
                r,
                application=(app["namespace"], app["name"]),
                target=target,
                same_release=same_release,
                timeout_s=self.options.timeout,
                repo=w.root,
            )
            return StageResult(
                headline=f"{target.revision[:12]} {state.phase} at step {state.step}: {state.message}"
            )

        self.stage("rollout", follow)

    def _pushed_release(self) -> argo.Target:
        """The commit to follow (--revision, else the env's last promotion in the workspace's git) and what
        its overlay deploys."""
        from pipeline.deploy import argo, gitops  # noqa: PLC0415

        c, repo = self.config, self.workspace.root
        given = self.options.revision or gitops.last_promotion(repo, c)
        if given is None:
            raise StageError(
                f"no promotion commit of {c.name} in the git history of {repo}: pass --revision SHA (the "
                f"commit `promote --env {c.name} --gitops` pushed)"
            )
        revision = gitops.resolve_commit(repo, given)
        release = gitops.release_at(repo, c, revision)
        if release is None or release.model_version is None:
            raise StageError(
                f"commit {revision[:12]} has no {gitops.release_path(c)} with a model_version: it is not a "
                f"promotion of {c.name}; pass the commit `promote --env {c.name} --gitops` pushed"
            )
        return argo.Target(revision=revision, image=release.reference, model_version=release.model_version)

    def promote(self, to_version: str | None = None) -> None:
        from pipeline.stages import promote  # noqa: PLC0415

        c, w, r = self.config, self.workspace, self.reporter
        version = to_version or self.options.to_version
        if self.options.gitops:
            self.stage("promote", lambda: self._promote_gitops(version))
        else:
            self.stage("promote", lambda: promote.promote(c, w, r, to_version=version))

    def _promote_gitops(self, to_version: str | None) -> StageResult:
        """Commit + push the overlay for the candidate, then move the alias; on an alias failure, revert,
        so Git and the registry never disagree."""
        from pipeline.adapters import registry  # noqa: PLC0415
        from pipeline.deploy import gitops  # noqa: PLC0415
        from pipeline.stages import promote  # noqa: PLC0415

        c, w, r = self.config, self.workspace, self.reporter
        repo = w.root
        gitops.require_remote(c)
        gitops.ensure_clean(repo)
        candidate = promote.candidate_version(registry.client(c, w), c, to_version)
        lineage = gitops.lineage_from_tags(c, str(candidate.version), registry.version_tags(candidate))
        gitops.commit_release(repo, c, lineage, r)
        try:
            return promote.promote(c, w, r, to_version=to_version)
        except Exception:
            r.warn("the alias did not move; reverting the GitOps commit so Git matches the registry")
            gitops.revert_last(repo, c, r)
            raise

    def rollback(self) -> None:
        from pipeline.adapters import registry  # noqa: PLC0415
        from pipeline.deploy import gitops  # noqa: PLC0415
        from pipeline.stages import promote  # noqa: PLC0415

        c, w, r = self.config, self.workspace, self.reporter

        def roll_back() -> StageResult:
            if self.options.gitops:
                # Refuse before touching Git when the alias has nowhere to go back to.
                promote.rollback_target(registry.client(c, w), c)
                gitops.revert_last(w.root, c, r)
            return promote.rollback(c, w, r)

        self.stage("rollback", roll_back)

    def serve(self) -> None:
        from pipeline.stages import serve  # noqa: PLC0415

        model = self.served_model()
        serve.serve(
            self.config,
            self.workspace,
            self.reporter,
            model=model,
            fallback=self.fallback_model(model),
            port=self.options.port,
            metrics_port=self.options.metrics_port,
        )

    def drift(self) -> None:
        from pipeline.stages import drift  # noqa: PLC0415

        c, w, r, o = self.config, self.workspace, self.reporter, self.options
        model = self.served_model()
        self.stage(
            "drift",
            lambda: drift.drift(
                c, w, r, model=model, input_path=o.input_path, url=o.url, allow_remote=o.allow_remote
            ),
        )

    def run_all(self) -> None:
        """Every stage of RUN_ORDER, stopping at the first failure."""
        for name in RUN_ORDER:
            getattr(self, name)()

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
        r.table(
            ["stage", "status", "seconds", "key figure"],
            [(rec.name, rec.status.upper(), f"{rec.seconds:.1f}", rec.figure) for rec in self.records],
        )
        reused = [record.name for record in self.records if record.status == "reused"]
        if reused:
            r.note(f"reused valid artifacts for: {', '.join(reused)} (--fresh redoes them)")
        evidence.write_report(c, w, self.records, r)
