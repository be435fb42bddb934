"""The load-test gate on Locust's JSON stats, the target guard rails and the `loadtest:` config section."""

import shutil
from pathlib import Path

import pytest

from pipeline.adapters.service_process import loopback_url
from pipeline.cli import main
from pipeline.config import ConfigError, LoadTestSpec, load_config
from pipeline.stages.loadtest import percentile, slo_checks, summarize

REPO = Path(__file__).parents[3]


def entry(name: str, times: dict[str, int], failures: int = 0) -> dict[str, object]:
    """One endpoint as Locust's --json-file writes it (histogram keys are strings)."""
    return {
        "name": name,
        "method": "POST",
        "num_requests": sum(times.values()),
        "num_failures": failures,
        "response_times": times,
        "start_time": 100.0,
        "last_request_timestamp": 110.0,
    }


def test_percentile_is_nearest_rank_on_the_histogram() -> None:
    histogram = {1: 90, 5: 5, 40: 4, 300: 1}
    assert percentile(histogram, 0.95) == 5
    assert percentile(histogram, 0.99) == 40
    assert percentile(histogram, 1.0) == 300
    assert percentile({}, 0.95) is None


def test_summary_merges_routes_into_the_total() -> None:
    stats = summarize(
        [entry("v1_instances", {"2": 95, "50": 5}), entry("v2_infer", {"3": 98, "9": 2}, failures=2)],
        ["v1_instances", "v2_infer", "v1_records"],
    )
    assert stats["total"].requests == 200
    assert stats["total"].error_ratio == pytest.approx(0.01)
    assert stats["total"].rps == pytest.approx(20.0)
    assert stats["v1_instances"].p99_ms == 50
    assert stats["v1_records"].requests == 0
    assert stats["v1_records"].p95_ms is None


def test_a_route_never_hit_and_its_slo_fail() -> None:
    spec = LoadTestSpec.model_validate({"slo": {"routes": {"v1_records": {"p95_ms": 100}}}})
    stats = summarize(
        [entry("v1_instances", {"2": 100}), entry("v2_infer", {"2": 100})], list(spec.traffic.weights)
    )
    failed = [c.line() for c in slo_checks(spec, stats) if not c.passed]
    assert failed == ["v1_records requests 0 < min 1", "v1_records p95_ms: no data"]


def test_no_requests_at_all_fails_every_check() -> None:
    spec = LoadTestSpec()
    checks = slo_checks(spec, summarize([], list(spec.traffic.weights)))
    assert checks
    assert not any(c.passed for c in checks)


def test_breaches_name_value_comparator_and_bound() -> None:
    spec = LoadTestSpec.model_validate(
        {"slo": {"total": {"p95_ms": 10, "p99_ms": 100, "max_error_ratio": 0.01, "min_rps": 50}}}
    )
    stats = summarize([entry(route, {"2": 90, "60": 10}, failures=5) for route in spec.traffic.weights], [])
    failed = [c.line() for c in slo_checks(spec, stats) if not c.passed]
    assert "total p95_ms 60 > max 10" in failed
    assert "total error_ratio 0.05 > max 0.01" in failed
    assert "total rps 30 < min 50" in failed
    assert not any(f.startswith("total p99_ms") for f in failed)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://localhost:1/", "http://[::1]:80"])
def test_loopback_targets_are_allowed(url: str) -> None:
    assert loopback_url(url, option="--host", allow_remote=False) == url.rstrip("/")


def test_remote_targets_need_allow_remote() -> None:
    with pytest.raises(
        ConfigError, match=r"^--host http://model.example.com: .*not a loopback.*--allow-remote"
    ):
        loopback_url("http://model.example.com", option="--host", allow_remote=False)
    remote = loopback_url("https://model.example.com", option="--host", allow_remote=True)
    assert remote == "https://model.example.com"
    with pytest.raises(ConfigError, match="expected a URL"):
        loopback_url("127.0.0.1:8000", option="--host", allow_remote=True)


@pytest.mark.parametrize(("stage", "option"), [("loadtest", "--host"), ("drift", "--url")])
def test_a_remote_target_is_the_same_usage_error_for_every_stage(
    stage: str, option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same mistake exits the same way: 2, a usage error, before any work is done."""
    environments = REPO / "environments"
    args = [stage, "--env", "dev", "--config-dir", str(environments), "--workdir", str(tmp_path)]
    assert main([*args, option, "http://model.example.com"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
    assert not (tmp_path / "artifacts").exists()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "environments", tmp_path / "environments")
    return tmp_path / "environments"


def test_every_environment_has_a_bounded_load_test(config_dir: Path) -> None:
    dev = load_config("dev", config_dir).loadtest
    assert dev.profile.duration_s <= 15
    for env in ("staging", "prod"):
        heavier = load_config(env, config_dir).loadtest.profile
        assert heavier.users > dev.profile.users
        assert heavier.duration_s > dev.profile.duration_s


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "loadtest.profile.users=100000",
            "loadtest.profile.users: Input should be less than or equal to 500",
        ),
        ("loadtest.profile.duration_s=99999", "loadtest.profile.duration_s: Input should be less than"),
        ("loadtest.traffic.weights.v2_infer=0", "weights must be > 0"),
        ("loadtest.traffic.weights.v3=1", "loadtest.traffic.weights.v3"),
        ("loadtest.slo.total=!replace {}", "an SLO needs 'p95_ms'"),
        ("loadtest.slo.total={p95_ms: 100, p99_ms: 50}", "p99_ms 50 is below p95_ms 100"),
        ("loadtest.profile.shape=spike", "shape 'spike' needs 'spike_users'"),
        ("loadtest.profile.rps=3", "loadtest.profile.rps: unknown key"),
    ],
)
def test_a_malformed_load_section_fails_at_config_load(config_dir: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match="loadtest") as info:
        load_config("dev", config_dir, [override])
    assert message in str(info.value)


def test_an_slo_for_a_route_not_sent_is_a_config_error(config_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"v2_infer, not in traffic\.weights"):
        load_config("dev", config_dir, ["loadtest.traffic.weights=!replace {v1_instances: 1}"])
