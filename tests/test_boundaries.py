"""The import rules of docs/DEVELOPING.md ("Boundaries"): the trainer talks to the pipeline only through its faces;
the pipeline never imports the trainer; the model layer imports nothing of how a model is trained; bench/ is a client
of both packages that reaches past the faces only into the parts it measures, and nothing imports bench/."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACES = ("pipeline.errors", "pipeline.flow", "pipeline.shards", "pipeline.sources")
# The pipeline modules bench/ times or replays beside the faces, each for a reason; a new one is added here knowingly.
BENCH_MEASURES = {
    "pipeline.flow.codec": "bench_codec, bench_read: bytes and speed of the flow codecs, the legacy one included",
    "pipeline.flow.dis": "bench_dis, bench_codec, bench_read: the DIS presets",
    "pipeline.flow.correlation": "bench_flownet2: the correlation layer alone",
    "pipeline.flow.flownet2": "bench_flownet2, bench_gpu, gpu_parts: the FlowNet2 network alone",
    "pipeline.plan": "bench_prep, bench_read, gpu_stream: a prep job's plan without the CLI",
    "pipeline.build": "bench_prep, bench_read, gpu_stream: one prep worker without Ray",
    "pipeline.job": "bench_prep: the Ray job itself",
    "pipeline.world": "bench_prep: the demo world as its input (the world's face)",
    "pipeline.sources.cityscapes": "bench_prep, bench_read, diagnose_demo: the Cityscapes pairs the prep job reads",
}
# Entry points are no library: a benchmark calls the functions behind them.
CLI_MODULES = (
    "pipeline.cli",
    "trainer.training.cli",
    "trainer.evaluation.eval_cli",
    "trainer.evaluation.predict_cli",
    "trainer.experiment.cli",
)


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports, at any depth (`from a import b` counts as a.b when a is a package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module in ("pipeline", "trainer"):  # `from pipeline import shards` imports pipeline.shards
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _imports(folder: str):
    """(file name relative to the repo, imported module) for every import of every .py file under `folder`."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module in imported_modules(path):
            yield path.relative_to(ROOT).as_posix(), module


def _within(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_trainer_imports_only_the_pipeline_faces():
    bad = [f"{f} imports {m}" for f, m in _imports("trainer") if _within(m, ("pipeline",)) and m not in FACES]
    assert not bad, f"trainer/ may import only {', '.join(FACES)}: " + "; ".join(sorted(bad))


def test_pipeline_never_imports_the_trainer():
    bad = [f"{f} imports {m}" for f, m in _imports("pipeline") if _within(m, ("trainer",))]
    assert not bad, "; ".join(bad)


def test_the_model_layer_imports_nothing_of_training():
    """A network does not depend on how it is trained: trainer/models/ imports no other trainer module."""
    bad = [
        f"{f} imports {m}"
        for f, m in _imports("trainer/models")
        if _within(m, ("trainer",)) and not _within(m, ("trainer.models",))
    ]
    assert not bad, "; ".join(bad)


def test_bench_imports_the_faces_the_trainer_and_what_it_measures():
    allowed = (*FACES, *BENCH_MEASURES)
    bad = [f"{f} imports {m}" for f, m in _imports("bench") if _within(m, ("pipeline",)) and not _within(m, allowed)]
    bad += [f"{f} imports {m}" for f, m in _imports("bench") if _within(m, CLI_MODULES)]
    assert not bad, "bench/ may import " + ", ".join(allowed) + " and trainer/ but no CLI: " + "; ".join(sorted(bad))


def test_nothing_but_the_tests_imports_bench():
    bad = [
        f"{f} imports {m}" for folder in ("pipeline", "trainer") for f, m in _imports(folder) if _within(m, ("bench",))
    ]
    assert not bad, "; ".join(bad)
