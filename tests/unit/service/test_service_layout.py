"""The service stands alone: the image holds model_service's modules and its lock, nothing from the pipeline
nor the client; its rooms import one way."""

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[3] / "model_service"


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_the_service_imports_nothing_from_the_pipeline_or_mlflow() -> None:
    offending = {
        f"{path.relative_to(SERVICE)}: {module}"
        for path in sorted(SERVICE.rglob("*.py"))
        for module in _imported_modules(path)
        if module.split(".")[0] in {"pipeline", "mlflow", "benchmarks"}
    }
    assert not offending


def test_the_contract_imports_only_the_standard_library() -> None:
    # The client SDK and the pipeline import model_service/contract/card.py: it must cost them nothing.
    imported = {module.split(".")[0] for module in _imported_modules(SERVICE / "contract" / "card.py")}
    assert imported <= {"__future__", "collections", "dataclasses", "itertools", "json", "math", "pathlib",
                        "re", "types", "typing"}  # fmt: skip


def test_the_rooms_are_the_documented_ones_and_the_client_lives_outside() -> None:
    rooms = sorted(p.name for p in SERVICE.iterdir() if (p / "__init__.py").is_file())
    assert rooms == ["contract", "model", "operations", "protocol", "server"]
    assert not (SERVICE / "client.py").exists()
    for path in SERVICE.rglob("*.py"):
        assert "model_client" not in {module.split(".")[0] for module in _imported_modules(path)}, path


def test_the_served_model_imports_neither_the_breaker_nor_the_worker() -> None:
    # The breaker wraps a served model and the worker holds either: they import it, never the reverse.
    served = _imported_modules(SERVICE / "model" / "served.py")
    assert not served & {"model_service.model.breaker", "model_service.server.worker"}


def test_the_contract_imports_nothing_else_of_the_service() -> None:
    for path in (SERVICE / "contract").glob("*.py"):
        ours = {module for module in _imported_modules(path) if module.startswith("model_service")}
        assert ours <= {"model_service.contract.card", "model_service.contract.monitoring"}, path


ROOM_ORDER = ["server", "model", "operations", "protocol", "contract"]
"""Each room imports only itself and the rooms after it (CONTRIBUTING.md, code map)."""


def test_the_rooms_import_one_way() -> None:
    backwards = set()
    for i, room in enumerate(ROOM_ORDER):
        for path in (SERVICE / room).glob("*.py"):
            for module in _imported_modules(path):
                parts = module.split(".")
                if parts[0] == "model_service" and len(parts) > 1 and parts[1] in ROOM_ORDER[:i]:
                    backwards.add(f"{room}/{path.name}: {module}")
    assert not backwards
