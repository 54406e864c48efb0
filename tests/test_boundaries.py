"""The trainer talks to the pipeline only through its faces; the pipeline never imports the trainer (DEVELOPING.md)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACES = ("pipeline.errors", "pipeline.flow", "pipeline.shards", "pipeline.sources")


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports, at any depth (`from a import b` counts as a.b when a is a package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "pipeline":  # `from pipeline import shards` imports the module pipeline.shards
                found |= {f"pipeline.{alias.name}" for alias in node.names}
    return found


def test_trainer_imports_only_the_pipeline_faces():
    bad = []
    for path in sorted((ROOT / "trainer").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        for module in imported_modules(path):
            if module == "pipeline" or module.startswith("pipeline."):
                if module not in FACES:
                    bad.append(f"{name} imports {module}")
    assert not bad, f"trainer/ may import only {', '.join(FACES)}: " + "; ".join(sorted(bad))


def test_pipeline_never_imports_the_trainer():
    bad = [
        f"{path.relative_to(ROOT).as_posix()} imports {module}"
        for path in sorted((ROOT / "pipeline").rglob("*.py"))
        for module in imported_modules(path)
        if module == "trainer" or module.startswith("trainer.")
    ]
    assert not bad, "; ".join(bad)
