"""A suggested `deploy.resources` from what the load test measured the service using, for the load the
environment's SLO promises (`loadtest.slo.total.min_rps`), with the arithmetic shown (docs/alerting.md,
"Sizing").

- CPU: the measured CPU seconds per 1,000 requests times the SLO load, shared by `deploy.min_replicas`
  pods, is the cores one pod needs; the request is that divided by the HPA's target utilisation (so the
  floor of pods carries the SLO load at the target), the limit twice the request and at least one core:
  a CFS quota under one core throttles a burst within each 100 ms period, which shows up as latency.
- Memory: the peak summed RSS of the service's processes, requests at 1.25x and the limit at 1.5x (the
  ModelServiceMemoryNearLimit ticket fires at `alerts.memory_limit_share` of the limit, 0.9 by default,
  well above the measured peak), each rounded up to 16 Mi.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.config import Config

MEMORY_REQUEST_FACTOR = 1.25
MEMORY_LIMIT_FACTOR = 1.5
CPU_LIMIT_FACTOR = 2
CPU_LIMIT_FLOOR_MILLICORES = 1000
MIB = 1024 * 1024


@dataclass(frozen=True)
class Sizing:
    """The per-1,000-request figures, the load they are scaled to, the suggestion and its arithmetic."""

    requests: int
    cpu_seconds_per_1000: float
    peak_rss_mib: float
    load_rps: float
    load_source: str
    requests_cpu: str
    limits_cpu: str
    requests_memory: str
    limits_memory: str
    arithmetic: list[str]

    def resources(self) -> dict[str, str]:
        """As the `deploy.resources` keys take them."""
        return {
            "requests_cpu": self.requests_cpu,
            "requests_memory": self.requests_memory,
            "limits_cpu": self.limits_cpu,
            "limits_memory": self.limits_memory,
        }


def _millicores(cores: float, step: int) -> int:
    return max(step, math.ceil(cores * 1000 / step) * step)


def _mebibytes(mib: float, step: int = 16) -> int:
    return max(step, math.ceil(mib / step) * step)


def suggest(
    config: Config, *, requests: int, cpu_seconds: float, peak_rss_bytes: int, measured_rps: float | None
) -> Sizing | None:
    """The suggestion for `config`'s environment, or None without requests to divide by."""
    if requests <= 0:
        return None
    deploy = config.deploy
    per_1000 = cpu_seconds / requests * 1000
    if config.loadtest.slo.total.min_rps is not None:
        load, source = config.loadtest.slo.total.min_rps, "loadtest.slo.total.min_rps"
    else:
        load, source = measured_rps or 0.0, "the measured rate (no loadtest.slo.total.min_rps)"
    pod_cores = per_1000 / 1000 * load / deploy.min_replicas
    target = deploy.target_cpu_utilization / 100
    cpu_request = _millicores(pod_cores / target, 50)
    cpu_limit = max(CPU_LIMIT_FLOOR_MILLICORES, _millicores(cpu_request * CPU_LIMIT_FACTOR / 1000, 100))
    rss_mib = peak_rss_bytes / MIB
    memory_request = _mebibytes(rss_mib * MEMORY_REQUEST_FACTOR)
    memory_limit = _mebibytes(rss_mib * MEMORY_LIMIT_FACTOR)
    share = f"{per_1000:.3f} / 1000 x {load:g} / {deploy.min_replicas} = {pod_cores:.3f} cores per pod"
    request = f"{pod_cores:.3f} / {target:g} (deploy.target_cpu_utilization) = {pod_cores / target:.3f}"
    arithmetic = [
        f"CPU: {cpu_seconds:.2f} s over {requests} requests = {per_1000:.3f} s per 1,000 requests",
        f"at {load:g} req/s ({source}) over {deploy.min_replicas} pods (deploy.min_replicas): {share}",
        f"requests_cpu = {request} -> {cpu_request}m; limits_cpu = {CPU_LIMIT_FACTOR} x requests, >= 1 core -> {cpu_limit}m",
        f"memory: peak RSS of the service's processes {rss_mib:.0f} Mi; requests_memory = "
        + f"{MEMORY_REQUEST_FACTOR:g} x -> {memory_request}Mi, limits_memory = {MEMORY_LIMIT_FACTOR:g} x -> {memory_limit}Mi",
    ]
    return Sizing(
        requests=requests,
        cpu_seconds_per_1000=round(per_1000, 4),
        peak_rss_mib=round(rss_mib, 1),
        load_rps=load,
        load_source=source,
        requests_cpu=f"{cpu_request}m",
        limits_cpu=f"{cpu_limit}m",
        requests_memory=f"{memory_request}Mi",
        limits_memory=f"{memory_limit}Mi",
        arithmetic=arithmetic,
    )
