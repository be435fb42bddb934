"""The service refuses to start, with a one-line reason and a non-zero exit, when the model is not right."""

import json
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def copy(model_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(model_dir / name, target / name)
    return target


def edit_card(folder: Path, **changes: Any) -> None:
    card = json.loads((folder / "model.json").read_text())
    card.update(changes)
    (folder / "model.json").write_text(json.dumps(card))


def tampered(folder: Path) -> None:
    with (folder / "model.onnx").open("ab") as handle:
        handle.write(b"\0")


def missing_card(folder: Path) -> None:
    (folder / "model.json").unlink()


def malformed_card(folder: Path) -> None:
    (folder / "model.json").write_text('{"card_version": 1, "name": ')


def input_mismatch(folder: Path) -> None:
    card = json.loads((folder / "model.json").read_text())
    edit_card(folder, features=card["features"][:-1])


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (tampered, "differs from the card's onnx.sha256"),
        (missing_card, "model card not found"),
        (malformed_card, "not valid JSON"),
        (input_mismatch, "the card lists 29 features"),
    ],
)
def test_refuses(
    run_service: Callable[..., subprocess.CompletedProcess[str]],
    model_dir: Path,
    tmp_path: Path,
    breakage: Any,
    reason: str,
) -> None:
    folder = copy(model_dir, tmp_path / "model")
    breakage(folder)
    result = run_service(folder, "--port", "1")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("model_service: refusing to start: ")
    assert reason in lines[0]


def test_refuses_faults_in_prod(
    run_service: Callable[..., subprocess.CompletedProcess[str]], model_dir: Path
) -> None:
    result = run_service(model_dir, "--port", "1", environment="prod", fault_error_ratio=0.1)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        (
            "model_service: refusing to start: Value error, fault injection (MODEL_SERVICE_FAULT_LATENCY_MS / "
            "MODEL_SERVICE_FAULT_ERROR_RATIO / MODEL_SERVICE_FAULT_INVERT_SCORES) is refused when MODEL_SERVICE_ENVIRONMENT=prod; unset them"
        )
    ]


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a start-up refusal, after checking the exit status is 2 and nothing else was printed."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("model_service: refusing to start: ")
    return lines[0]


def test_refuses_garbage_rs256_key_file(
    run_service: Callable[..., subprocess.CompletedProcess[str]], model_dir: Path, tmp_path: Path
) -> None:
    pem = tmp_path / "public.pem"
    pem.write_text("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n")
    line = refusal(run_service(model_dir, "--port", "1", jwt_rs256_public_key_file=pem))
    assert "MODEL_SERVICE_JWT_RS256_PUBLIC_KEY_FILE" in line
    assert f"{pem} is not a PEM public key" in line


def test_refuses_missing_rs256_key_file(
    run_service: Callable[..., subprocess.CompletedProcess[str]], model_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "absent.pem"
    line = refusal(run_service(model_dir, "--port", "1", jwt_rs256_public_key_file=missing))
    assert "MODEL_SERVICE_JWT_RS256_PUBLIC_KEY_FILE" in line
    assert f"cannot read {missing}" in line


def test_refuses_short_hs256_secret(
    run_service: Callable[..., subprocess.CompletedProcess[str]], model_dir: Path
) -> None:
    line = refusal(run_service(model_dir, "--port", "1", jwt_hs256_secret="k"))
    assert "MODEL_SERVICE_JWT_HS256_SECRET" in line
    assert "at least 32 bytes, got 1" in line
    assert "'k'" not in line  # the secret itself is never printed


def test_refuses_misspelt_variable(
    run_service: Callable[..., subprocess.CompletedProcess[str]], model_dir: Path
) -> None:
    line = refusal(run_service(model_dir, "--port", "1", max_in_fligth=8))
    assert line.endswith(
        "MODEL_SERVICE_MAX_IN_FLIGTH is not a setting of the service; did you mean MODEL_SERVICE_MAX_IN_FLIGHT?"
    )


def test_refuses_port_in_use(
    run_service: Callable[..., subprocess.CompletedProcess[str]], model_dir: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = refusal(run_service(model_dir, "--port", str(port)))
    assert f"MODEL_SERVICE_PORT: cannot bind 127.0.0.1:{port}" in line


def test_refuses_metrics_port_in_use_or_equal_to_the_api_port(
    run_service: Callable[..., subprocess.CompletedProcess[str]], model_dir: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with socket.socket() as probe:  # a free API port, so that the metrics port is the one refused
            probe.bind(("127.0.0.1", 0))
            api = probe.getsockname()[1]
        line = refusal(run_service(model_dir, "--port", str(api), "--metrics-port", str(taken)))
    assert f"MODEL_SERVICE_METRICS_PORT: cannot bind 127.0.0.1:{taken}" in line
    assert line.endswith("(--metrics-port)")
    same = refusal(run_service(model_dir, "--port", "8123", "--metrics-port", "8123"))
    assert "MODEL_SERVICE_METRICS_PORT and MODEL_SERVICE_PORT are both 8123" in same


def test_refuses_a_malformed_sensitive_list(
    run_service: Callable[..., subprocess.CompletedProcess[str]], model_dir: Path
) -> None:
    # Checked at start whether the input log is on or not: it also shapes the metrics' feature bins.
    line = refusal(run_service(model_dir, "--port", "1", log_inputs_sensitive="mean radius:encrypt"))
    assert "MODEL_SERVICE_LOG_INPUTS_SENSITIVE" in line
    assert "expected FIELD:hash or FIELD:drop" in line
