"""The connection limit derived from RLIMIT_NOFILE (model_service/server/http.py), in a child process whose
limits the test sets, so this process's limits never change."""

import resource
import subprocess
import sys

import pytest

from model_service.server.http import DESCRIPTOR_RESERVE

PROBE = (
    "import resource; from model_service.server.http import derived_connection_limit, raise_descriptor_limit;"
    "raise_descriptor_limit(); print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], derived_connection_limit())"
)


def soft_and_limit(soft: int, hard: int) -> tuple[int, int]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    output = subprocess.run(
        [sys.executable, "-c", PROBE],
        preexec_fn=limit,  # setrlimit only, before exec
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(output[0]), int(output[1])


@pytest.mark.parametrize(
    ("soft", "hard", "expected"),
    [
        (1024, 8192, (8192, 8192 - DESCRIPTOR_RESERVE)),  # soft raised to hard, then the reserve kept
        (2048, 2048, (2048, 1024)),  # below twice the reserve: half the limit
        (64, 64, (64, 32)),
    ],
)
def test_soft_limit_raised_and_connections_kept_below_it(
    soft: int, hard: int, expected: tuple[int, int]
) -> None:
    if hard > resource.getrlimit(resource.RLIMIT_NOFILE)[1]:
        pytest.skip(f"this process may not raise its hard descriptor limit to {hard}")
    assert soft_and_limit(soft, hard) == expected
