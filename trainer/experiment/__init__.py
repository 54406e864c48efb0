"""`make demo` (`python -m trainer.experiment --out runs/demo`): world -> prep -> train baselines and I2VDA -> eval ->
table and figure. The face: import from here.

`plan.py` says what to run (the preset, the rows, the steps), `outputs.py` where it goes and when a step is done,
`runner.py` runs steps as resumable child processes (nothing demo-specific), `report.py` writes the tables and the
figure, `cli.py` is the click command.
"""

from trainer.experiment.cli import main  # not `cli`: that name is the module trainer.experiment.cli
from trainer.experiment.outputs import (
    Paths,
    check_preset,
    eval_done,
    store_done,
    training_done,
    training_progress,
    world_done,
)
from trainer.experiment.plan import (
    PAIRS,
    PREFIX,
    VARIANTS,
    DemoPreset,
    Variant,
    plan_prep,
    plan_pretrain,
    plan_runs,
    preset_of,
    run_of,
    train_args,
)
from trainer.experiment.report import (
    collect_results,
    format_cell,
    mean_std,
    paired_rows,
    paired_table,
    per_class_table,
    results_markdown,
    steps_table,
    summary_table,
    write_figure,
)
from trainer.experiment.runner import TOOL_MODULES, Runner, Step, StepFailed, read_json, run_steps, step_records

__all__ = [
    "PAIRS",
    "PREFIX",
    "TOOL_MODULES",
    "VARIANTS",
    "DemoPreset",
    "Paths",
    "Runner",
    "Step",
    "StepFailed",
    "Variant",
    "check_preset",
    "collect_results",
    "eval_done",
    "format_cell",
    "main",
    "mean_std",
    "paired_rows",
    "paired_table",
    "per_class_table",
    "plan_prep",
    "plan_pretrain",
    "plan_runs",
    "preset_of",
    "read_json",
    "results_markdown",
    "run_of",
    "run_steps",
    "step_records",
    "steps_table",
    "store_done",
    "summary_table",
    "train_args",
    "training_done",
    "training_progress",
    "world_done",
    "write_figure",
]
