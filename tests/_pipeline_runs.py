"""Overrides for a whole `run` in the tests: the load test and the rollout rehearsal get their shortest sound
profile (the artifact version does not depend on these sections)."""

FAST = (
    "--set", "loadtest.profile.duration_s=3",
    "--set", "rollout.steps=[{set_weight: 50}, {analysis: {}}]",
    "--set", "rollout.analysis={interval_seconds: 1, count: 1, min_requests: 5}",
    "--set", "rollout.scale_down_delay_seconds=0",
)  # fmt: skip
