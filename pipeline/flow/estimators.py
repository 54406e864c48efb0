"""The registry of flow estimators: each entry names an estimator, the weights file it needs, its options and how
to build it; `i2vda-prep`'s choices, the plan, the trainer's online flow and `i2vda-predict --tc` all derive from it.

To add an estimator: write its class (the interface of `pipeline/flow/interface.py`) in a new module of this package
and register an `EstimatorEntry` for it below (docs/DEVELOPING.md, "Add a flow estimator").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pipeline.errors import InputError
from pipeline.flow.dis import DEFAULT_PRESET, DIS_PRESETS
from pipeline.flow.flownet2_file import FLOWNET2_FILE_NAME
from pipeline.flow.interface import FlowEstimator
from pipeline.registry import Registry


@dataclass(frozen=True)
class EstimatorOption:
    """A keyword of an estimator's builder. One that decides the flow is also the flag `--<estimator>-<option>` of
    `i2vda-prep flows/val`, is recorded in the store's manifest, and is what the trainer's online flow uses."""

    name: str  # the builder's keyword, e.g. "preset"
    default: object
    choices: tuple = ()  # the allowed values; () = any value of the default's type
    help: str = ""
    decides_flow: bool = True  # False: a speed setting (e.g. FlowNet2's batch size), neither a flag nor recorded


@dataclass(frozen=True)
class EstimatorEntry:
    """A registered flow estimator: its name, what it needs, its options and how to build it."""

    name: str  # `--flow NAME`
    summary: str  # one line for `--help`
    build: Callable[..., FlowEstimator]  # build(checkpoint, device, **options); imports the estimator's module late
    weights: str | None = None  # the weights file it needs as --flow-ckpt (its usual name); None: it takes none
    options: tuple[EstimatorOption, ...] = ()
    uses_gpu: bool = False  # prep runs one actor per GPU when the cluster has GPUs

    def flag(self, option: EstimatorOption) -> str:
        """The option's flag on `i2vda-prep flows/val`: `--dis-preset`."""
        return f"--{self.name}-{option.name}".replace("_", "-")

    def check_weights(self, checkpoint: str | os.PathLike | None) -> None:
        """Refuse a missing weights file, or one given to an estimator that takes none."""
        if self.weights is not None and checkpoint is None:
            raise InputError(f"--flow {self.name} needs --flow-ckpt {self.weights}")
        if self.weights is None and checkpoint is not None:
            raise InputError(f"--flow {self.name} takes no checkpoint, got --flow-ckpt {checkpoint}")

    def check_options(self, options: Mapping) -> None:
        """Refuse options the builder does not take, and values outside an option's choices."""
        known = {option.name: option for option in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            takes = ", ".join(known) or "none"
            raise InputError(f"--flow {self.name}: unknown option(s) {', '.join(unknown)}; it takes {takes}")
        for name, value in options.items():
            option = known[name]
            if option.choices and value not in option.choices:
                choices = ", ".join(map(str, option.choices))
                raise InputError(f"{self.flag(option)} {value}: expected one of {choices}")

    def recorded_options(self, options: Mapping) -> dict:
        """The options that decide the flow, given or default: what a store's manifest records."""
        self.check_options(options)
        return {o.name: options.get(o.name, o.default) for o in self.options if o.decides_flow}


def _build_dis(checkpoint, device, **options) -> FlowEstimator:
    from pipeline.flow.dis import DISEstimator  # OpenCV only; DIS runs on the CPU whatever `device` says

    return DISEstimator(**options)


def _build_flownet2(checkpoint, device, **options) -> FlowEstimator:
    from pipeline.flow.flownet2 import FlowNet2Estimator  # imported late: the network's modules are large

    return FlowNet2Estimator(checkpoint, device=device, **options)


ESTIMATORS: Registry[EstimatorEntry] = Registry("flow estimator", "--flow")
ESTIMATORS.register(
    EstimatorEntry(
        "dis",
        "OpenCV DIS, on the CPU, no weights",
        _build_dis,
        options=(
            EstimatorOption("preset", DEFAULT_PRESET, tuple(DIS_PRESETS), "DIS preset (see pipeline/flow/dis.py)"),
        ),
    )
)
ESTIMATORS.register(
    EstimatorEntry(
        "flownet2",
        "FlowNet2, on a GPU where there is one",
        _build_flownet2,
        weights=FLOWNET2_FILE_NAME,
        options=(EstimatorOption("batch_size", 4, help="pairs per forward pass", decides_flow=False),),
        uses_gpu=True,
    )
)


def load_estimator(
    name: str, checkpoint: str | os.PathLike | None = None, device: str = "cpu", **options
) -> FlowEstimator:
    """Build the registered estimator `name` on `device` (DIS: option preset; FlowNet2: needs `checkpoint`)."""
    entry = ESTIMATORS.get(name)
    entry.check_weights(checkpoint)
    entry.check_options(options)
    return entry.build(checkpoint, device, **options)
