"""The service tests' small models (card v2: typed features, a regression, string classes) and, as the
oracle a batch must agree with, the service itself in process (TestClient with lifespan)."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from model_service.app import create_app
from model_service.operations.settings import ServiceSettings
from tests._service_models import (  # noqa: F401 - fixtures: pytest finds them in this module
    iris_model_dir,
    mixed_strict_model_dir,
    regression_model_dir,
)


@pytest.fixture(scope="module")
def service() -> Iterator[Callable[[Path], TestClient]]:
    """The started service of a model folder (one per folder, kept for the module: it holds no state a
    verdict depends on); every one is stopped at the end."""
    clients: dict[Path, TestClient] = {}

    def start(model_dir: Path) -> TestClient:
        if model_dir not in clients:
            client = TestClient(
                create_app(ServiceSettings(model_dir=model_dir)), raise_server_exceptions=False
            )
            client.__enter__()
            clients[model_dir] = client
        return clients[model_dir]

    yield start
    for client in clients.values():
        client.__exit__(None, None, None)
