"""In-process fixtures: one exported model per session, apps built from settings, TestClient with lifespan."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from model_service.app import create_app
from model_service.operations.settings import ServiceSettings
from tests._oidc import keys  # noqa: F401 - a fixture (the local OIDC key server): pytest finds it here
from tests._service_models import (  # noqa: F401 - fixtures: pytest finds them in this module
    iris_model_dir,
    mixed_model_dir,
    mixed_strict_model_dir,
    regression_model_dir,
)


@pytest.fixture(scope="session")
def model_dir(plain_model_dir: Path) -> Path:
    return plain_model_dir


@pytest.fixture(scope="session")
def card(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "model.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def rows(model_dir: Path) -> list[list[float]]:
    return json.loads((model_dir / "eval.json").read_text())["rows"]  # type: ignore[no-any-return]


@pytest.fixture
def make_client(model_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """Build a started client (lifespan run) for settings overrides (`model_dir` too); all are closed after
    the test."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = ServiceSettings(**{"model_dir": model_dir, **overrides})
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
