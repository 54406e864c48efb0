"""What `make demo` shows: the results table (mean ± std over seeds), paired differences, the per-class table,
the steps' wall times and the figure; and the results gathered from the eval folders."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.shards import ValStore
from pipeline.sources import colorize, figure_grid, get_protocol, legend_classes, write_png
from trainer.evaluation.eval_cli import METRICS_NAME
from trainer.evaluation.predict import predict_labels
from trainer.experiment.outputs import Paths
from trainer.experiment.plan import PAIRS, VARIANTS, run_of
from trainer.experiment.runner import read_json
from trainer.training.checkpoint import load_segmenter

DECIMALS = 1  # the paper's tables give one decimal
MISSING = "–"  # a value nobody measured (a class absent from the val frames, TC switched off)
FIGURE_ROWS = 3  # annotated val frames shown in the figure
FRAME_TITLE, LABEL_TITLE = "frame", "ground truth"

# A row of a table: (title, one metrics dict per seed). A metrics dict holds `miou`, `tc` (percent, None when not
# measured) and `per_class` ({class name: IoU in percent or None}), as `i2vda-eval` writes them to metrics.json.
Row = tuple[str, Sequence[dict]]


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation) of the measured values (None and NaN left out); std None below 2 values."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return None, None
    return statistics.fmean(kept), statistics.stdev(kept) if len(kept) > 1 else None


def format_cell(values: Sequence[float | None], decimals: int = DECIMALS) -> str:
    """'45.2 ± 1.3' over several seeds, '45.2' for one, '–' when nothing was measured."""
    mean, std = mean_std(values)
    if mean is None:
        return MISSING
    return f"{mean:.{decimals}f}" if std is None else f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int) -> list[str]:
    """A markdown table; columns from `numeric_from` on are right-aligned."""
    align = "|" + "---|" * numeric_from + "---:|" * (len(header) - numeric_from)
    return ["| " + " | ".join(header) + " |", align, *("| " + " | ".join(row) + " |" for row in rows)]


def summary_table(rows: Sequence[Row]) -> list[str]:
    """Method | seeds | mIoU | TC, one row per method (the demo's main table)."""
    body = [
        (title, str(len(runs)), format_cell([r["miou"] for r in runs]), format_cell([r.get("tc") for r in runs]))
        for title, runs in rows
    ]
    return _markdown(("method", "seeds", "mIoU", "TC"), body, numeric_from=1)


def per_class_table(rows: Sequence[Row]) -> list[str]:
    """Method | one column per class (IoU) | mIoU, in the class order of the protocol (the paper's Table 1 layout)."""
    names = list(rows[0][1][0]["per_class"])
    body = [
        (
            title,
            *(format_cell([r["per_class"].get(n) for r in runs]) for n in names),
            format_cell([r["miou"] for r in runs]),
        )
        for title, runs in rows
    ]
    return _markdown(("method", *names, "mIoU"), body, numeric_from=1)


def paired_table(pairs: Sequence[tuple[Row, Row]]) -> list[str]:
    """Method - baseline in mIoU, per seed and mean ± std: same-seed runs share initial weights and data order, so the
    paired difference is the method's effect with that shared noise taken out."""
    body = []
    for (title, runs), (base_title, base_runs) in pairs:
        diffs = [a["miou"] - b["miou"] for a, b in zip(runs, base_runs)]
        wins = sum(d > 0 for d in diffs)
        body.append(
            (
                f"{title} − {base_title}",
                ", ".join(f"{d:+.1f}" for d in diffs),
                format_cell(diffs),
                f"{wins}/{len(diffs)}",
            )
        )
    return _markdown(("paired difference (mIoU)", "per seed", "mean ± std", "seeds won"), body, numeric_from=1)


def steps_table(steps: dict) -> list[str]:
    """Step | wall time (s) | when, from the step records ({name: {wall_s, skipped}}) of
    trainer/experiment/runner.py."""
    body = [
        (name, MISSING if r["wall_s"] is None else f"{r['wall_s']:.0f}", "earlier" if r["skipped"] else "now")
        for name, r in steps.items()
    ]
    return _markdown(("step", "wall time (s)", "ran"), body, numeric_from=1)


def results_markdown(
    rows: Sequence[Row], preset_lines: Sequence[str], steps: dict, total_s: float, pairs: Sequence[tuple[Row, Row]] = ()
) -> str:
    """OUT/results.md: the settings, the main table, paired differences, per-class IoU, the wall time of every step."""
    seeds = {len(runs) for _, runs in rows}
    spread = "mean ± sample std over seeds" if max(seeds) > 1 else "one seed"
    paired = ["Paired by seed:", "", *paired_table(pairs), ""] if pairs else []
    lines = [
        "# i2vda demo results",
        "",
        *preset_lines,
        "",
        f"mIoU and TC in percent on the demo's Cityscapes val frames, last checkpoint ({spread}). Exact values "
        "differ between CPUs (floating-point order); compare rows by their paired differences.",
        "",
        *summary_table(rows),
        "",
        *paired,
        "Per-class IoU:",
        "",
        *per_class_table(rows),
        "",
        "Steps (trainings run side by side; a step that ran earlier shows the time it took then):",
        "",
        *steps_table(steps),
        "",
        f"Wall time of this invocation: {total_s / 60:.1f} min ({total_s:.0f} s).",
    ]
    return "\n".join(lines) + "\n"


def collect_results(paths: Paths, names, seeds, records: dict) -> tuple[list, dict]:
    """Table rows (title, metrics per seed) and results.json's {method: {seed: scores, commands, wall times}}."""
    rows, results = [], {}
    for name in names:
        runs = [read_json(paths.eval(name, seed) / METRICS_NAME) for seed in seeds]
        rows.append((VARIANTS[name].title, runs))
        results[name] = {
            str(seed): {
                "miou": m["miou"],
                "tc": m.get("tc"),
                "per_class": m["per_class"],
                "best_miou": m.get("best", {}).get("miou"),
                "train": records[f"train_{run_of(name)}_seed{seed}"],
                "eval": records[f"eval_{name}_seed{seed}"],
            }
            for seed, m in zip(seeds, runs)
        }
    return rows, results


def paired_rows(names, rows: Sequence[Row]) -> list[tuple[Row, Row]]:
    """The (method, baseline) rows of PAIRS whose both sides are in the table, in PAIRS' order."""
    by_name = dict(zip(names, rows))
    return [(by_name[a], by_name[b]) for a, b in PAIRS if a in by_name and b in by_name]


def write_figure(
    path: str | Path, val_store: str | Path, columns: Sequence[tuple[str, Path]], rows: int = FIGURE_ROWS
) -> Path:
    """Figure of the first `rows` annotated val frames: frame, ground truth, then one prediction per (title, ckpt)."""
    models = [(title, *load_segmenter(ckpt, "cpu")[:2]) for title, ckpt in columns]
    protocol = get_protocol(models[0][2].protocol)
    with ValStore(val_store) as store:
        keys = store.keys()[:rows]
        frames = np.stack([store.image(key) for key in keys])  # (R, H, W, 3) uint8 at the input size
        labels = [store.label(key, protocol.name) for key in keys]  # (H_label, W_label) train ids each
    label_hw = labels[0].shape
    preds = [predict_labels(model, frames, label_hw) for _, model, _ in models]  # each (R, H_label, W_label)
    grid = [
        [frames[r], colorize(labels[r], protocol), *(colorize(p[r], protocol) for p in preds)] for r in range(len(keys))
    ]
    picture = figure_grid(
        grid,
        titles=[FRAME_TITLE, LABEL_TITLE, *(title for title, _ in columns)],
        tile_hw=frames.shape[1:3],
        legend=protocol,
        legend_ids=legend_classes(protocol, *labels, *preds),  # the classes shown, not the protocol's whole list
    )
    write_png(path, picture)
    return Path(path)
