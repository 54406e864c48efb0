"""TrainConfig: every setting of one training run, frozen, built once at the entry point and saved with the run.

Defaults are the paper's (§4.2, Algorithm 1, Tables 3-5) where it gives one, and the conventions of docs/TRAINING.md
elsewhere.
Fields left None (`protocol`, the sizes, `flow_estimator`) are filled from the stores' manifests by
`trainer.training.data.open_stores`, so `RUN/config.json` always records what was trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from pipeline.errors import InputError
from pipeline.sources import get_protocol, parse_size_wh
from trainer.losses import LAMBDA_ADV, POLY_POWER
from trainer.temporal import ALPHA, DELTA, ETA_PX, OCCLUSION_GRIDS, PL_PORTION, PL_SELECTIONS
from trainer.training.value_types import typed_values

METHODS = ("i2vda", "source_only", "adv_only")  # adv_only = Table 3's baseline: L_seg + 0.01 L_adv on P0
ONLINE_FLOWS = ("estimator", "linear")  # F_1->t = F(I1, It) online (Eq. 5), or (1 - t) F_1->0
# --amp: the autocast dtype of each mode (CUDA only; "off" runs in float32).
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_MODES = tuple(AMP_DTYPES)
DEVICES = ("auto", "cpu", "cuda")
# BN statistics of M' (docs/TRAINING.md): M's running ones in eval mode (the paper), its own I1 batch's, or running
# ones re-estimated on target frames after each copy.
PROXY_BN_MODES = ("running", "batch", "target")
# Which of M's forward calls feed BN's running statistics: every one (PyTorch's default), or the target frames only.
BN_STATS_MODES = ("all", "target")
INIT_FORMATS = ("deeplab", "torchvision", "segmenter")  # DeepLab ImageNet init, a torchvision ResNet, or our own run
# `--init none`: random weights, asked for on purpose. The ResNet segmenters refuse to start without an init otherwise
# (the paper fine-tunes an ImageNet-initialised ResNet-101; a random one trains a different, much weaker method).
RANDOM_INIT = "none"
NEEDS_INIT = ("deeplab_r101", "deeplab_r50")
IMAGENET_INIT_FILE = "DeepLab_resnet_pretrained_imagenet.pth"
# When M' <- M (Algorithm 1 lines 5-7; Table 4 varies ITER_COPY and ITER_LAUNCH): "launch" = at ITER_LAUNCH and every
# ITER_COPY iterations after it; "modulo" = whenever iteration % ITER_COPY == 0, the algorithm's line 5 read
# literally (then a launch that is not a multiple of ITER_COPY labels with an M' copied before it, possibly at
# iteration 0). Both agree when ITER_LAUNCH is a multiple of ITER_COPY (the paper's 8k / 8k).
COPY_RULES = ("launch", "modulo")
# Settings a resume may change: none of them changes what iteration i computes from its data
# (max_iter moves the end of the poly schedule, which the paper ties to it; see docs/TRAINING.md). `shards` is where
# the stores lie: a resume compares the stores' content instead (trainer.training.checkpoint.check_resumable), unless
# `resume_other_stores` says the user means to continue on other data.
RESUMABLE_FIELDS = (
    "out",
    "resume",
    "max_iter",
    "checkpoint_interval",
    "log_interval",
    "image_interval",
    "num_workers",
    "device",
    "shards",
    "resume_other_stores",
    "val",
    "val_interval",
    "keep_checkpoints",
)
_SIZE_FIELDS = ("target_size_hw", "source_size_hw")
MAX_SEED = 2**64 - 1  # torch.manual_seed's range (numpy's generators take any non-negative integer)
FLOAT32_MAX = 3.4028234663852886e38  # learning rates and loss weights become float32 tensors: larger ones overflow


@dataclass(frozen=True)
class TrainConfig:
    """One training run of Algorithm 1 (or a baseline); see `i2vda-train --help` for each field's flag."""

    out: str  # the run folder RUN/
    shards: str = "stores"  # folder holding the stores, or its URL (http(s)://, pipe:; pipeline.shards.remote)
    source: str = "viper"  # source store name: stores/<source>/
    target: str = "cityscapes_seq"  # target pair store name: stores/<target>/
    method: str = "i2vda"
    arch: str = "deeplab_r101"
    disc_width: int = 64  # ndf of D's first conv (64-128-256-512, AdaptSegNet); smaller for CPU demos
    protocol: str | None = None  # class protocol; None = the source store's
    target_size_hw: tuple[int, int] | None = None  # checked against the target store; None = the store's
    source_size_hw: tuple[int, int] | None = None  # checked against the source store; None = the store's
    max_iter: int = 50_000  # paper §4.2
    batch_size: int = 1  # per rank; the paper's batch 2 is 1 on each of two GPUs
    lr: float = 2.5e-4  # SGD, paper §4.2
    momentum: float = 0.9
    weight_decay: float = 5e-4  # AdaptSegNet, which the paper follows
    classifier_lr_mult: float = 10.0  # the ASPP heads learn 10x faster (DeepLab-v2, ADVENT's optim_parameters)
    lr_d: float = 1e-4  # Adam for D, paper §4.2
    betas_d: tuple[float, float] = (0.9, 0.99)
    poly_power: float = POLY_POWER  # over max_iter, both optimisers
    lambda_adv: float = LAMBDA_ADV
    iter_copy: int = 8000  # ITER_COPY: iterations between copies M' <- M (Table 4)
    iter_launch: int = 8000  # ITER_LAUNCH: L_tc from this iteration on (Table 4)
    copy_rule: str = "launch"  # copies at ITER_LAUNCH + k ITER_COPY; "modulo": at k ITER_COPY (COPY_RULES)
    proxy_ckpt: str | None = None  # a fixed M' from this checkpoint, never copied from M (a teacher; diagnostics)
    proxy_bn: str = "running"  # M' in eval mode with M's running BN statistics, as the paper says
    bn_stats: str = "all"  # "target": M's running BN statistics from target frames only (DSBN's target branch)
    pl_select: str = "entropy"  # Eq. 8's one threshold delta; "class-balanced" adds CBST's per-class thresholds
    pl_portion: float = PL_PORTION  # with class-balanced PL: share of each class's predictions kept at least
    eta: float = ETA_PX  # Eq. 7 threshold in pixels
    delta: float = DELTA  # Eq. 8 entropy threshold
    alpha: float = ALPHA  # Eq. 3 blend
    t: float | None = None  # None: t ~ U(0, 1) at every iteration (Table 5 "random"); else fixed
    no_temporal_aug: bool = False  # It := I0 and F_1->t := F_1->0 (Table 3 "w/o temporal augmentation")
    no_tc: bool = False  # no L_tc, no proxy (Table 3 "w/o temporal-augmented consistency")
    no_occlusion: bool = False  # drop O from Eq. 8
    no_entropy: bool = False  # drop E from Eq. 8
    occlusion_grid: str = "i1"  # "i0" = the paper's literal Eq. 7
    online_flow: str = "estimator"
    flow_estimator: str | None = None  # must match the target store's; None = the store's
    flow_ckpt: str | None = None  # FlowNet2 weights for the online F(I1, It)
    init: str | None = None  # ImageNet init of the backbone; RANDOM_INIT ("none") = random weights on purpose
    init_format: str = "deeplab"
    seed: int = 1234  # DA-VSN's RANDOM_SEED
    checkpoint_interval: int = 1000  # DA-VSN's SAVE_PRED_EVERY
    # Checkpoints kept (the newest N, plus the best by --val); 0 keeps all: i2vda-eval --ckpt RUN scores every one to
    # report the best (DA-VSN's protocol), and a cluster's scratch space is the user's to size (docs/TRAINING.md).
    keep_checkpoints: int = 0
    log_interval: int = 10
    image_interval: int = 500
    val: str | None = None  # a val store (`i2vda-prep val`): M scored on it every val_interval iterations, at the end
    val_interval: int = 0  # with val: iterations between scorings; 0 = at the end only
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    num_workers: int = 4
    # Samples per stream and worker: a 1024x512 target pair is ~3 MB, so 256 keep a worker under ~1 GB per stream
    # (WebDataset's README suggests ~1000 for small samples).
    shuffle_buffer: int = 256
    # The data stream restarts from a seed every block_iters iterations (trainer/training/data.py).
    block_iters: int = 1000
    resume: str | None = None  # "latest" (newest checkpoint in out/) or a checkpoint file
    resume_other_stores: bool = False  # resume even if the stores hold other data than the checkpoint's (a warning)

    def __post_init__(self) -> None:
        problems = setting_problems(self)
        if problems:
            raise SettingsError(problems)

    @property
    def init_file(self) -> str | None:
        """The weights file M starts from, or None for random weights."""
        return None if self.init in (None, RANDOM_INIT) else self.init

    def copies_proxy(self, it: int) -> bool:
        """Whether M' <- M before iteration `it` (Algorithm 1 lines 5-7, under `copy_rule`); a fixed --proxy-ckpt
        teacher is never copied over."""
        if not self.uses_tc or self.proxy_ckpt is not None:
            return False
        if self.copy_rule == "modulo":
            return it % self.iter_copy == 0
        return it >= self.iter_launch and (it - self.iter_launch) % self.iter_copy == 0

    @property
    def uses_disc(self) -> bool:
        """Whether D and L_adv take part (all but source-only)."""
        return self.method != "source_only"

    @property
    def uses_target(self) -> bool:
        """Whether M sees target frames at all (source-only must not: BN's running statistics would learn them)."""
        return self.method != "source_only"

    @property
    def uses_intermediate(self) -> bool:
        """Whether M sees a synthesized It (I2VDA; with --no-temporal-aug It is I0 itself)."""
        return self.method == "i2vda"

    @property
    def uses_tc(self) -> bool:
        """Whether L_tc and the proxy M' take part."""
        return self.method == "i2vda" and not self.no_tc

    @property
    def num_classes(self) -> int:
        """Output channels of M: the protocol's trained classes."""
        if self.protocol is None:
            raise ValueError("num_classes needs a resolved protocol (trainer.training.data.open_stores fills it in)")
        return get_protocol(self.protocol).num_classes

    def to_dict(self) -> dict:
        """JSON-able dict of every field, plus `num_classes` once the protocol is known (for eval)."""
        out = dataclasses.asdict(self)
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        if self.protocol is not None:
            out["num_classes"] = self.num_classes
        return out

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> TrainConfig:
        """The inverse of to_dict; unknown keys and values of the wrong type raise InputError naming `where`."""
        known = _check_known(values, where)
        typed, problems = coerce_settings({k: v for k, v in values.items() if k in known}, where)
        if problems:
            raise SettingsError(problems)
        return cls(**typed)


class SettingsError(InputError):
    """Every invalid setting found at once: `problems` lists (field, message); the line shown is the first message."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__(problems[0][1])
        self.problems = problems


def setting_problems(c: TrainConfig) -> list[tuple[str, str]]:
    """(field, one-line message) for every setting of `c` out of its range or against another setting."""
    problems: list[tuple[str, str]] = []

    def bad(name: str, message: str) -> None:
        problems.append((name, message))

    for name, allowed in (
        ("method", METHODS),
        ("online_flow", ONLINE_FLOWS),
        ("amp", AMP_MODES),
        ("device", DEVICES),
        ("init_format", INIT_FORMATS),
        ("occlusion_grid", OCCLUSION_GRIDS),
        ("proxy_bn", PROXY_BN_MODES),
        ("bn_stats", BN_STATS_MODES),
        ("pl_select", PL_SELECTIONS),
        ("copy_rule", COPY_RULES),
    ):
        if getattr(c, name) not in allowed:
            bad(name, f"{_flag(name)}: got {getattr(c, name)!r}, expected one of {', '.join(allowed)}")
    for name in (
        "max_iter",
        "batch_size",
        "disc_width",
        "iter_copy",
        "checkpoint_interval",
        "log_interval",
        "image_interval",
        "shuffle_buffer",
        "block_iters",
    ):
        if getattr(c, name) < 1:
            bad(name, f"{_flag(name)}: expected a positive integer, got {getattr(c, name)}")
    for name in ("iter_launch", "num_workers", "keep_checkpoints"):
        if getattr(c, name) < 0:
            bad(name, f"{_flag(name)}: expected an integer >= 0, got {getattr(c, name)}")
    if isinstance(c.seed, bool) or not isinstance(c.seed, int) or not 0 <= c.seed <= MAX_SEED:
        bad("seed", f"--seed: expected an integer in 0..{MAX_SEED} (2**64 - 1), got {c.seed}")
    if c.val_interval < 0 or (c.val_interval and c.val is None):
        bad(
            "val_interval",
            f"--val-interval {c.val_interval}: expected iterations >= 0 between scorings on "
            f"the --val store{'' if c.val is not None else ', and --val is not given'}",
        )
    for name, low, strict in (
        ("lr", 0.0, False),  # lr 0: a frozen M
        ("lr_d", 0.0, False),
        ("eta", 0.0, True),
        ("weight_decay", 0.0, False),
        ("poly_power", 0.0, False),
        ("lambda_adv", 0.0, False),
        ("classifier_lr_mult", 0.0, False),
    ):
        message = _number_problem(name, getattr(c, name), low, strict)
        if message:
            bad(name, message)
    rates_ok = not {"lr", "classifier_lr_mult"} & {name for name, _ in problems}
    if rates_ok and c.lr * c.classifier_lr_mult > FLOAT32_MAX:
        bad(
            "lr",
            f"--lr {c.lr} x --classifier-lr-mult {c.classifier_lr_mult}: the classifier's learning rate exceeds "
            f"float32's {FLOAT32_MAX:.4g}",
        )
    if len(c.betas_d) != 2:
        bad("betas_d", f"--betas-d: expected two numbers, got {len(c.betas_d)}")
    for name, values in (("momentum", (c.momentum,)), ("betas_d", c.betas_d)):
        if not all(isinstance(v, (int, float)) and 0.0 <= v < 1.0 for v in values):
            bad(name, f"{_flag(name)}: expected numbers in [0, 1), got {', '.join(map(str, values))}")
    for name in ("t", "alpha", "delta", "pl_portion"):
        value = getattr(c, name)
        if value is not None and not 0.0 <= value <= 1.0:
            bad(name, f"{_flag(name)}: expected a number in [0, 1], got {value}")
    for name in _SIZE_FIELDS:
        size = getattr(c, name)
        if size is not None and (len(size) != 2 or min(size) < 1):
            bad(name, f"{_flag(name)}: expected two positive sizes, got {size}")
    if c.protocol is not None:
        try:
            get_protocol(c.protocol)  # an unknown name is an InputError naming --protocol
        except InputError as exc:
            bad("protocol", str(exc))
    if c.proxy_ckpt is not None and not c.uses_tc:
        bad(
            "proxy_ckpt",
            f"--proxy-ckpt: only I2VDA with L_tc has a proxy M' (got --method {c.method}"
            f"{' --no-tc' if c.no_tc else ''})",
        )
    if c.bn_stats == "target" and not c.uses_target:
        bad("bn_stats", "--bn-stats target: source-only M sees no target frame to take statistics from")
    if c.amp != "off" and c.device == "cpu":
        bad("amp", f"--amp {c.amp}: autocast is used on CUDA only; pass --amp off on the CPU")
    return problems


def coerce_settings(values: dict, where: str) -> tuple[dict, list[tuple[str, str]]]:
    """Settings in their TrainConfig field types -> (the typed settings, (key, one-line message) for each value of
    another type, left out of the typed ones). Every message names `where`, the key and the type expected."""
    return typed_values(values, typing.get_type_hints(TrainConfig), where)


def _check_known(values: dict, where: str) -> set[str]:
    """TrainConfig's field names; a setting that is none of them (nor the derived num_classes) is an InputError."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known - {"num_classes"})
    if unknown:
        raise InputError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    return known


def _flag(name: str) -> str:
    """The command-line flag of a field (the sizes are given as --target-size / --source-size WxH)."""
    return "--" + name.removesuffix("_hw").replace("_", "-")


def _number_problem(name: str, value, low: float, strict: bool) -> str | None:
    """None for a number above `low` (`strict`) or at least `low` that float32 holds; else a one-line message naming
    the flag."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > low if strict else value >= low) and abs(value) <= FLOAT32_MAX:
        return None
    bound = f"{'>' if strict else '>='} {low:g}"
    return f"{_flag(name)}: expected a number {bound} and at most {FLOAT32_MAX:.4g} (float32), got {value}"


# Sizes as the flags write them ("1024x512", width first) -> the (H, W) fields; config files use these keys.
WH_SIZE_KEYS = {"target_size": "target_size_hw", "source_size": "source_size_hw"}


def read_config_file(path: str | Path, problems: list[str] | None = None) -> dict:
    """Settings from a JSON or YAML file (`--config`): a mapping of TrainConfig field names to values, each checked
    against its field's type (YAML's `1e-2`, text to PyYAML, is read as the number); sizes may be written as the flags
    write them (`target_size: 1024x512`, `source_size: 896x512`: width first).

    A bad setting (unknown key, wrong type, bad size) raises one InputError naming the file, the key and what was
    expected; given a `problems` list, every bad setting's message is appended there instead and the key left out.
    A file that cannot be read or parsed raises InputError either way."""
    path = Path(path)
    where = f"--config {path}"
    if not path.is_file():
        raise InputError(f"{where}: no such file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # PyYAML, installed with ray; only YAML configs need it

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as exc:  # any parse failure is bad input
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{where}: not valid JSON/YAML ({first})") from None
    if not isinstance(values, dict):
        raise InputError(f"{where}: expected a mapping of settings, got {type(values).__name__}")
    found: list[str] = []
    for key, field in WH_SIZE_KEYS.items():
        if key not in values:
            continue
        value = values.pop(key)
        if field in values:
            found.append(f"{where}: give {key} (WIDTHxHEIGHT) or {field} ([H, W]), not both")
            values.pop(field)
            continue
        try:
            values[field] = None if value is None else list(parse_size_wh(value, f"{where}: {key}")[::-1])
        except InputError as exc:
            found.append(str(exc))
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known - {"num_classes"})
    if unknown:
        found.append(f"{where}: unknown setting(s) {', '.join(unknown)}")
    typed, wrong = coerce_settings({k: v for k, v in values.items() if k in known}, where)
    found += [message for _, message in wrong]
    if found and problems is None:
        raise InputError(found[0])
    if problems is not None:
        problems.extend(found)
    return {key: list(v) if isinstance(v, tuple) else v for key, v in typed.items()}


def require_init(config: TrainConfig) -> None:
    """A ResNet segmenter starts from an init file unless random weights are asked for (`--init none`); a resumed run
    starts from its checkpoint."""
    if config.arch in NEEDS_INIT and config.init is None and config.resume is None:
        raise InputError(
            f"--arch {config.arch} needs --init: the paper fine-tunes an ImageNet-initialised ResNet "
            f"({IMAGENET_INIT_FILE}, README 'Get the data'); pass --init FILE, or --init {RANDOM_INIT} to train "
            "from random weights on purpose"
        )


def resume_mismatch(saved: dict, config: TrainConfig) -> str | None:
    """The first setting (other than RESUMABLE_FIELDS) in which a checkpoint's config differs, or None."""
    current = config.to_dict()
    for name in sorted(set(saved) | set(current)):
        if name in RESUMABLE_FIELDS:
            continue
        if saved.get(name) != current.get(name):
            return f"{name}: checkpoint has {saved.get(name)!r}, this run {current.get(name)!r}"
    return None
