"""The figures `bench/bench_gpu.py` derives from its measurements, and its one table (Markdown, ready for the docs).

Derived, per batch size at the fastest precision the device has (bf16 on CUDA, fp32 on the CPU), from the whole
iteration with the online FlowNet2: iterations per second, the hours of the paper's 50,000 iterations, the online
flow's share of the iteration (FlowNet2 alone over the iteration, and the iteration minus the one with the linear
F_1->t, over the iteration), and the iteration over "M alone"; per streaming run, the hours of the paper's run at
the rate `i2vda-train` reached with its data.
"""

from __future__ import annotations

import click
from gpu_parts import M_ALONE, precisions

PAPER_ITERATIONS = 50_000  # paper §4.2
GOAL_OVER_M_ALONE = 1.3  # the whole iteration within 1.3x of M's three forward+backward and one forward
GOAL_HOURS = 3.0  # the paper's 50,000 iterations on one H200
GOAL_DATA_WAIT = 0.02  # of the iteration
SECONDS_PER_HOUR = 3600


def _median(rows: list[dict] | None, **match) -> float | None:
    """median_s of the first error-free row matching every field, else None."""
    for row in rows or []:
        if "error" not in row and all(row.get(k) == v for k, v in match.items()):
            return row["median_s"]
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def derived(report: dict, batches: tuple[int, ...], cuda: bool) -> dict:
    """The derived figures (module docstring); None where a measurement they need is missing or failed."""
    amp = precisions(cuda)[-1]
    per_batch = {}
    for b in batches:
        step = _median(report.get("iteration"), batch=b, amp=amp, online_flow="flownet2")
        linear = _median(report.get("iteration"), batch=b, amp=amp, online_flow="linear")
        flow = _median(report.get("flownet2"), batch=b, amp="off", channels_last=False)  # the loop's call: fp32
        alone = _median(report.get("deeplab"), stage=M_ALONE, batch=b, amp=amp)
        per_batch[str(b)] = {
            "amp": amp,
            "iteration_s": step,
            "it_per_s": _ratio(1.0, step),
            "hours_for_paper_iterations": _ratio(PAPER_ITERATIONS * step, SECONDS_PER_HOUR) if step else None,
            "online_flow_share": _ratio(flow, step),
            "online_flow_share_by_difference": _ratio(step - linear, step) if step and linear else None,
            "iteration_over_m_alone": _ratio(step, alone),
        }
    runs = [r for r in (report.get("stream") or {}).get("runs", []) if "error" not in r]
    stream = [
        {
            "workers": r["workers"],
            "batch": r["batch"],
            "amp": r["amp"],
            "it_per_s": r["it_per_s"],
            "hours_for_paper_iterations": PAPER_ITERATIONS / r["it_per_s"] / SECONDS_PER_HOUR,
            "data_wait_frac": r["data_wait_frac"],
        }
        for r in runs
    ]
    return {"per_batch": per_batch, "stream": stream, "paper_iterations": PAPER_ITERATIONS}


def _seconds(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.1f} ms" if s < 10 else f"{s:.2f} s"


def _show(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _precision(amp: str) -> str:
    return "fp32" if amp == "off" else amp


def table_rows(report: dict) -> list[tuple[str, str, str, str, str]]:
    """(part, case, median, GPU time, peak MiB) for every case measured and every figure derived."""
    size = "x".join(str(n) for n in report["preset"]["target_hw"][::-1])
    rows = []

    def add(part: str, case: str, row: dict) -> None:
        if "error" in row:
            rows.append((part, case, f"failed: {row['error']}", "", ""))
        else:
            rows.append(
                (part, case, _seconds(row["median_s"]), _seconds(row["gpu_median_s"]), _show(row["peak_mib"], ".0f"))
            )

    for r in report.get("flownet2") or []:
        layout = ", channels_last" if r["channels_last"] else ""
        add(f"FlowNet2 F(I1, It) {size}", f"b{r['batch']} {_precision(r['amp'])}{layout}", r)
    for r in report.get("deeplab") or []:
        add(f"{report['preset']['arch']}, D", f"{r['stage']}, b{r['batch']} {_precision(r['amp'])}", r)
    for r in report.get("iteration") or []:
        add(
            "iteration (segmenter_step + discriminator_step)",
            f"b{r['batch']} {_precision(r['amp'])}, {r['online_flow']} F_1->t",
            r,
        )
    for r in (report.get("stream") or {}).get("runs", []):
        case = f"{r['workers']} workers, b{r['batch']} {_precision(r['amp'])}, {r['iterations']} it"
        result = (
            f"failed: {r['error']}"
            if "error" in r
            else f"{r['it_per_s']:.2f} it/s, data wait {r['data_wait_frac']:.1%}"
        )
        rows.append((f"stream (i2vda-train; data wait goal <= {GOAL_DATA_WAIT:.0%})", case, result, "", ""))
    d = report.get("derived") or {}
    hours = f"hours for {PAPER_ITERATIONS:,} iterations (goal <= {GOAL_HOURS:g} h on one H200)"
    for b, f in d.get("per_batch", {}).items():
        where = f"b{b} {_precision(f['amp'])}, FlowNet2 F_1->t"
        shares = f"{_show(f['online_flow_share'], '.1%')} / {_show(f['online_flow_share_by_difference'], '.1%')}"
        rows += [
            ("derived", f"{where}: iterations per second", _show(f["it_per_s"], ".2f"), "", ""),
            ("derived", f"{where}: {hours}", _show(f["hours_for_paper_iterations"], ".2f"), "", ""),
            ("derived", f"{where}: online flow share (FlowNet2 alone / by difference)", shares, "", ""),
            (
                "derived",
                f"{where}: iteration / M alone (goal <= {GOAL_OVER_M_ALONE}x)",
                _show(f["iteration_over_m_alone"], ".2f"),
                "",
                "",
            ),
        ]
    for s in d.get("stream", []):
        where = f"stream, {s['workers']} workers, b{s['batch']} {_precision(s['amp'])}"
        rows.append(("derived", f"{where}: {hours}", f"{s['hours_for_paper_iterations']:.2f}", "", ""))
    return rows


def print_table(report: dict) -> None:
    """The report as one Markdown table, headed by the machine and the settings."""
    p = report["preset"]
    mode = "TINY dry run on small sizes (not a measurement)" if report["tiny"] else "the paper's sizes"
    click.echo(
        f"bench_gpu: {report['device_name']} ({report['device']}), torch {report['torch']}, "
        f"Python {report['python']}; {mode}; median of {p['repeats']} after {p['warmup']} warm-up"
    )
    click.echo("| part | case | median | GPU time | peak MiB |")
    click.echo("|---|---|---:|---:|---:|")
    for row in table_rows(report):
        click.echo("| " + " | ".join(row) + " |")
