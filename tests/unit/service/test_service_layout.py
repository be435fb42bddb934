"""The service stands alone: the image holds model_service/*.py and its lock, nothing from the pipeline."""

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
        f"{path.name}: {module}"
        for path in sorted(SERVICE.glob("*.py"))
        for module in _imported_modules(path)
        if module.split(".")[0] in {"pipeline", "mlflow", "benchmarks"}
    }
    assert not offending


def test_the_service_is_one_flat_package() -> None:
    # pipeline/stages/image.py stages model_service/*.py (top level only) into the image.
    folders = [p.name for p in SERVICE.iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert folders == []
