"""The service stands alone: the image holds model_service's modules and its lock, nothing from the pipeline."""

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
