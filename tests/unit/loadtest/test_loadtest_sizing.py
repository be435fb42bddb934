"""The load test's sizing: the suggested `deploy.resources` from measured CPU seconds and peak RSS (the
arithmetic pinned on round figures), and the sampler measuring a real child process that burns CPU and
holds memory."""

import subprocess
import sys
from pathlib import Path

from pipeline.adapters.process_usage import sampled_usage
from pipeline.config import load_config
from pipeline.config.models import ResourcesSpec
from pipeline.deploy.sizing import suggest

ENVIRONMENTS = Path(__file__).resolve().parents[3] / "environments"
MIB = 1024 * 1024


def test_the_suggestion_shows_its_arithmetic() -> None:
    """prod: 150 req/s promised, 3 pods at least, HPA target 70 %. 0.5 CPU s per 1,000 requests is 0.025
    cores per pod at that load; / 0.7 = 0.0357 -> 50m requested, a 1-core limit (the floor). Peak RSS 200 Mi: 256 Mi
    requested (1.25x, rounded up to 16 Mi), 304 Mi limit (1.5x, 300 -> 304)."""
    prod = load_config("prod", ENVIRONMENTS)
    sizing = suggest(prod, requests=10_000, cpu_seconds=5.0, peak_rss_bytes=200 * MIB, measured_rps=400.0)
    assert sizing is not None
    assert sizing.cpu_seconds_per_1000 == 0.5
    assert (sizing.load_rps, sizing.load_source) == (150, "loadtest.slo.total.min_rps")
    assert sizing.resources() == {
        "requests_cpu": "50m",
        "requests_memory": "256Mi",
        "limits_cpu": "1000m",
        "limits_memory": "304Mi",
    }
    assert "0.500 / 1000 x 150 / 3 = 0.025 cores per pod" in sizing.arithmetic[1]
    ResourcesSpec(**sizing.resources())  # what `deploy.resources` accepts


def test_a_heavier_service_gets_more_cpu() -> None:
    """40 CPU s per 1,000 requests at staging's 100 req/s over 2 pods: 2 cores per pod, / 0.7 -> 2900m."""
    staging = load_config("staging", ENVIRONMENTS)
    sizing = suggest(staging, requests=1000, cpu_seconds=40.0, peak_rss_bytes=100 * MIB, measured_rps=None)
    assert sizing is not None
    assert (sizing.requests_cpu, sizing.limits_cpu) == ("2900m", "5800m")


def test_no_requests_no_suggestion() -> None:
    assert (
        suggest(
            load_config("dev", ENVIRONMENTS), requests=0, cpu_seconds=1, peak_rss_bytes=1, measured_rps=None
        )
        is None
    )


def test_the_sampler_measures_a_process_tree() -> None:
    """A child that allocates 64 MiB and spins for a while, under a parent that waits for it."""
    burn = "x = bytearray(64 * 1024 * 1024); import time; t = time.process_time()\nwhile time.process_time() - t < 0.6: pass"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"]
    )
    with sampled_usage(parent.pid, interval_s=0.05) as usage:
        parent.wait(timeout=30)
    (measured,) = usage
    assert measured.processes == 2
    assert measured.cpu_seconds >= 0.5
    assert measured.peak_rss_bytes >= 64 * MIB
