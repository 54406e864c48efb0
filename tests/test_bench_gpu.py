"""bench/bench_gpu.py and bench/gpu.sh: the --tiny dry run end to end without Ray, the CUDA plan, one-line failures.

The GPU machine the benchmark is for has no Ray, webdataset or zstandard: the dry run runs with `ray` made
unimportable for the script and the i2vda-train process it starts, and a missing package must cost one line.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GPU_SH = REPO / "bench" / "gpu.sh"


@pytest.fixture(scope="module")
def bench(request):
    """The bench/ modules, imported in this process."""
    sys.path.insert(0, str(REPO / "bench"))
    request.addfinalizer(lambda: sys.path.remove(str(REPO / "bench")))
    return {name: importlib.import_module(name) for name in ("bench_gpu", "gpu_parts", "gpu_report", "gpu_stream")}


def _no_ray(tmp_path: Path) -> dict:
    """The environment with a `ray` package first on PYTHONPATH that refuses to be imported (in every subprocess)."""
    blocker = tmp_path / "no_ray" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('ray is not installed on the GPU machine')\n")
    path = os.pathsep.join(p for p in (str(blocker.parent), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHON": sys.executable, "TQDM_DISABLE": "1"}


def test_tiny_dry_run_through_gpu_sh_without_ray(tmp_path):
    out = tmp_path / "out"
    env = _no_ray(tmp_path) | {
        "OUT": str(out),
        "WHEELS": str(tmp_path / "no_wheels"),
        "BENCH_JSON": str(tmp_path / "bench_gpu.json"),
    }
    done = subprocess.run(
        ["bash", str(GPU_SH), "--tiny"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((out / "bench_gpu.json").read_text())
    assert report["complete"] and report["tiny"] and report["device"] == "cpu"
    cases = report["flownet2"] + report["deeplab"] + report["iteration"] + report["stream"]["runs"]
    assert [c for c in cases if "error" in c] == []
    assert {c["amp"] for c in cases} == {"off"}  # bf16 and channels_last are for CUDA only
    assert all(c["median_s"] > 0 and len(c["runs_s"]) == 2 for c in cases if "median_s" in c)
    assert {(c["online_flow"]) for c in report["iteration"]} == {"flownet2", "linear"}
    runs = report["stream"]["runs"]
    assert [r["workers"] for r in runs] == [0, 2]
    assert all(r["it_per_s"] > 0 and 0 <= r["data_wait_frac"] < 1 and r["threads"] == 1 for r in runs)
    assert report["stream"]["stores"]["pairs"] == 4
    derived = report["derived"]["per_batch"]["1"]
    assert derived["it_per_s"] == pytest.approx(1 / derived["iteration_s"])
    assert derived["online_flow_share"] > 0  # a ratio of two noisy timings: it can pass 1 on a loaded CPU
    table = done.stdout.splitlines()
    assert table[0].startswith("bench_gpu: ") and "TINY dry run" in table[0]
    assert table[1] == "| part | case | median | GPU time | peak MiB |"
    assert sum(line.startswith("| derived |") for line in table) == 6  # 4 per batch, 1 per streaming run
    assert (out / "bench_gpu.log").read_text() == done.stdout


def test_trainer_and_bench_import_without_ray():
    code = (
        "import sys, pkgutil, importlib; sys.modules['ray'] = None; sys.path.insert(0, 'bench'); import trainer; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(trainer.__path__, 'trainer.')]; "
        "import pipeline.build, pipeline.plan, pipeline.shards, gpu_parts, gpu_report, gpu_stream"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_missing_package_is_one_line(tmp_path):
    code = (
        "import sys, runpy; sys.modules['webdataset'] = None; sys.modules['zstandard'] = None; "
        "sys.path.insert(0, 'bench'); sys.argv = ['bench/bench_gpu.py', '--tiny']; "
        "runpy.run_path('bench/bench_gpu.py', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: bench_gpu.py cannot import webdataset")
    assert "zstandard" in done.stderr and "Traceback" not in done.stderr


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel holding the module `name`."""
    folder.mkdir(parents=True)
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{name}.py", "VALUE = 1\n")
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    return path


def test_gpu_sh_installs_carried_wheels_and_passes_options(tmp_path):
    site = tmp_path / "site"
    _wheel(tmp_path / "wheels", "carried_probe")
    env = {
        **{k: v for k, v in os.environ.items() if k != "OUT"},
        "PYTHON": sys.executable,
        "SITE_DIR": str(site),
        "WHEELS": str(tmp_path / "wheels"),
        "BENCH_JSON": str(tmp_path / "bench_gpu.json"),
    }
    done = subprocess.run(["bash", str(GPU_SH), "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"gpu.sh: 1 wheel(s) from {tmp_path / 'wheels'} installed into {site}" in done.stdout
    assert (site / "carried_probe.py").is_file() and "--tiny" in done.stdout


def test_the_cuda_plan_measures_bf16_and_channels_last(bench):
    parts = bench["gpu_parts"]
    flownet2 = parts.flownet2_cases((1, 2), cuda=True)
    assert len(flownet2) == 8 and {(c["amp"], c["channels_last"]) for c in flownet2} == {
        ("off", False),
        ("bf16", False),
        ("off", True),
        ("bf16", True),
    }
    assert parts.flownet2_cases((1, 2), cuda=False) == [
        {"batch": b, "amp": "off", "channels_last": False} for b in (1, 2)
    ]
    iteration = parts.iteration_cases((1, 2), cuda=True)
    assert len(iteration) == 8 and {c["amp"] for c in iteration} == {"off", "bf16"}
    with pytest.raises(ValueError, match="CUDA only"):
        parts.amp_context("bf16", parts.torch.device("cpu"))


def test_log_rates_weights_each_window_by_its_time(bench, tmp_path):
    log = tmp_path / "log.jsonl"
    windows = [(1.0, 0.5), (2.0, 0.1), (4.0, 0.0), (1.0, 0.2), (2.0, 0.04)]  # (it/s, data wait) per window of 5 it
    log.write_text("".join(json.dumps({"it_per_s": r, "data_wait_frac": w}) + "\n" for r, w in windows))
    rates = bench["gpu_stream"].log_rates(log, 5)
    kept_seconds = [5 / r for r, _ in windows[1:]]  # the first window (a fifth of five) is the warm-up
    assert rates["windows_dropped"] == 1 and rates["windows_used"] == 4
    assert rates["it_per_s"] == pytest.approx(20 / sum(kept_seconds))
    assert rates["data_wait_frac"] == pytest.approx(
        sum(w * s for (_, w), s in zip(windows[1:], kept_seconds)) / sum(kept_seconds)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parts", "flownet2,nothing"], "error: --parts flownet2,nothing: expected some of"),
        (["--repeats", "0"], "error: --warmup must be >= 0 and --repeats >= 1"),
        (["--stream-workers", "0,x"], "error: --stream-workers 0,x: expected comma-separated integers"),
    ],
)
def test_bad_options_are_one_line(bench, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        bench["bench_gpu"].main(["--tiny", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message)


def test_no_cuda_is_one_line(bench, capsys):
    if bench["bench_gpu"].torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    for args, message in (
        (["--device", "cuda"], "error: --device cuda: no CUDA device is visible"),
        ([], "error: no CUDA device is visible: pass --tiny for a CPU dry run"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            bench["bench_gpu"].main(args)
        assert exit_info.value.code == 2 and capsys.readouterr().err.startswith(message)


def test_timed_on_cuda_synchronizes_around_the_events(bench, monkeypatch):
    # The CUDA bookkeeping of `timed`, with torch.cuda's calls recorded instead of run (no GPU here).
    parts, calls = bench["gpu_parts"], []

    class Event:
        def __init__(self, enable_timing: bool):
            assert enable_timing

        def record(self):
            calls.append("record")

        def elapsed_time(self, end) -> float:
            return 250.0  # milliseconds, as CUDA events report

    cuda = parts.torch.cuda
    monkeypatch.setattr(cuda, "Event", Event)
    monkeypatch.setattr(cuda, "synchronize", lambda device: calls.append("sync"))
    monkeypatch.setattr(cuda, "reset_peak_memory_stats", lambda device: calls.append("reset"))
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda device: 3 * parts.MIB)
    result = parts.timed(lambda: calls.append("fn"), parts.torch.device("cuda"), warmup=1, repeats=2)
    timed_call = ["sync", "record", "fn", "record", "sync"]
    assert calls == ["sync", "reset", "fn", *timed_call, *timed_call]
    assert result["gpu_median_s"] == 0.25 and result["peak_mib"] == 3.0 and len(result["runs_s"]) == 2


def test_a_failing_case_records_its_error(bench):
    parts = bench["gpu_parts"]
    row = parts.guarded({"batch": 2}, lambda: {"median_s": 1 / 0}, parts.torch.device("cpu"))
    assert row == {"batch": 2, "error": "ZeroDivisionError: division by zero"}


def test_auto_picks_cuda_when_visible(bench, monkeypatch):
    module = bench["bench_gpu"]
    monkeypatch.setattr(module.torch.cuda, "is_available", lambda: True)
    assert module.pick_device("auto", tiny=False).type == "cuda"
    assert module.pick_device("cpu", tiny=False).type == "cpu"


def test_the_cuda_report_derives_from_bf16_and_shows_failures(bench):
    # A report as a GPU run writes it (numbers made up), through the derived figures and the table.
    report_module, oom = bench["gpu_report"], "OutOfMemoryError: CUDA out of memory"

    def row(seconds: float, **case) -> dict:
        return case | {"median_s": seconds, "runs_s": [seconds], "gpu_median_s": seconds * 0.9, "peak_mib": 2048.0}

    report = {
        "preset": {"target_hw": [512, 1024], "arch": "deeplab_r101", "repeats": 8, "warmup": 3},
        "tiny": False,
        "device": "cuda",
        "device_name": "a GPU",
        "torch": "2.11",
        "python": "3.12",
        "flownet2": [
            row(0.05, batch=1, amp="off", channels_last=False),
            {"batch": 1, "amp": "bf16", "channels_last": True, "error": oom},
        ],
        "deeplab": [
            row(0.2, stage=bench["gpu_parts"].M_ALONE, batch=1, amp="bf16"),
            row(0.4, stage=bench["gpu_parts"].M_ALONE, batch=1, amp="off"),
        ],
        "iteration": [
            row(0.25, batch=1, amp="bf16", online_flow="flownet2"),
            row(0.2, batch=1, amp="bf16", online_flow="linear"),
            row(0.5, batch=1, amp="off", online_flow="flownet2"),
        ],
        "stream": {
            "runs": [
                {"workers": 8, "batch": 2, "amp": "bf16", "iterations": 50, "it_per_s": 4.0, "data_wait_frac": 0.01}
            ]
        },
    }
    report["derived"] = report_module.derived(report, (1,), cuda=True)
    figures = report["derived"]["per_batch"]["1"]
    assert figures["amp"] == "bf16" and figures["it_per_s"] == pytest.approx(4.0)
    assert figures["hours_for_paper_iterations"] == pytest.approx(50_000 * 0.25 / 3600)
    assert figures["online_flow_share"] == pytest.approx(0.2) and figures["iteration_over_m_alone"] == 1.25
    assert figures["online_flow_share_by_difference"] == pytest.approx(0.2)
    assert report["derived"]["stream"][0]["hours_for_paper_iterations"] == pytest.approx(50_000 / 4 / 3600)
    rows = report_module.table_rows(report)
    assert ("FlowNet2 F(I1, It) 1024x512", "b1 fp32", "50.0 ms", "45.0 ms", "2048") in rows
    assert ("FlowNet2 F(I1, It) 1024x512", "b1 bf16, channels_last", f"failed: {oom}", "", "") in rows
    assert any(r[0] == "derived" and "iteration / M alone" in r[1] and r[2] == "1.25" for r in rows)
