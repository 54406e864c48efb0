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
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from pipeline.errors import InputError
from pipeline.sources import get_protocol, parse_size_wh
from trainer.losses import LAMBDA_ADV, POLY_POWER
from trainer.temporal import ALPHA, DELTA, ETA_PX, OCCLUSION_GRIDS, PL_PORTION, PL_SELECTIONS

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
    iter_copy: int = 8000  # M' <- M when iteration % iter_copy == 0 (Table 4)
    iter_launch: int = 8000  # L_tc from this iteration on (Table 4)
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
    init: str | None = None  # ImageNet init of the backbone
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
        ):
            if getattr(self, name) not in allowed:
                raise InputError(f"{_flag(name)}: got {getattr(self, name)!r}, expected one of {', '.join(allowed)}")
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
            if getattr(self, name) < 1:
                raise InputError(f"{_flag(name)}: expected a positive integer, got {getattr(self, name)}")
        if self.iter_launch < 0 or self.num_workers < 0 or self.keep_checkpoints < 0:
            raise InputError("--iter-launch, --num-workers and --keep-checkpoints must be >= 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"--seed: expected an integer in 0..{MAX_SEED} (2**64 - 1), got {self.seed}")
        if self.val_interval < 0 or (self.val_interval and self.val is None):
            raise InputError(
                f"--val-interval {self.val_interval}: expected iterations >= 0 between scorings on "
                f"the --val store{'' if self.val is not None else ', and --val is not given'}"
            )
        for name, low, strict in (
            ("lr", 0.0, False),
            ("lr_d", 0.0, False),
            ("eta", 0.0, True),  # lr 0: a frozen M
            ("weight_decay", 0.0, False),
            ("poly_power", 0.0, False),
            ("lambda_adv", 0.0, False),
            ("classifier_lr_mult", 0.0, False),
        ):
            _check_number(name, getattr(self, name), low, strict)
        if self.lr * self.classifier_lr_mult > FLOAT32_MAX:
            raise InputError(
                f"--lr {self.lr} x --classifier-lr-mult {self.classifier_lr_mult}: the classifier's learning rate "
                f"exceeds float32's {FLOAT32_MAX:.4g}"
            )
        _check_unit(("momentum",), (self.momentum,))
        if len(self.betas_d) != 2:
            raise InputError(f"--betas-d: expected two numbers, got {len(self.betas_d)}")
        _check_unit(("betas_d",) * 2, self.betas_d)
        for name in ("t", "alpha", "delta", "pl_portion"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InputError(f"{_flag(name)}: expected a number in [0, 1], got {value}")
        for name in _SIZE_FIELDS:
            size = getattr(self, name)
            if size is not None and (len(size) != 2 or min(size) < 1):
                raise InputError(f"{_flag(name)}: expected two positive sizes, got {size}")
        if self.protocol is not None:
            get_protocol(self.protocol)  # an unknown name is an InputError naming --protocol
        if self.proxy_ckpt is not None and not self.uses_tc:
            raise InputError(
                f"--proxy-ckpt: only I2VDA with L_tc has a proxy M' (got --method {self.method}"
                f"{' --no-tc' if self.no_tc else ''})"
            )
        if self.bn_stats == "target" and not self.uses_target:
            raise InputError("--bn-stats target: source-only M sees no target frame to take statistics from")
        if self.amp != "off" and self.device == "cpu":
            raise InputError(f"--amp {self.amp}: autocast is used on CUDA only; pass --amp off on the CPU")

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
        """The inverse of to_dict; unknown keys raise InputError naming `where`."""
        known = _check_known(values, where)
        tuples = {"betas_d", *_SIZE_FIELDS}
        kwargs = {k: tuple(v) if k in tuples and v is not None else v for k, v in values.items() if k in known}
        return cls(**kwargs)


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


def _check_number(name: str, value, low: float, strict: bool) -> None:
    """A number above `low` (`strict`) or at least `low`, finite in float32; else a one-line InputError naming the
    flag."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value > low if strict else value >= low) and abs(value) <= FLOAT32_MAX):
        bound = f"{'>' if strict else '>='} {low:g}"
        raise InputError(
            f"{_flag(name)}: expected a number {bound} and at most {FLOAT32_MAX:.4g} (float32), got {value}"
        )


def _check_unit(names: tuple[str, ...], values) -> None:
    """Momentum-like factors: finite, in [0, 1)."""
    for name, value in zip(names, values):
        if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
            raise InputError(f"{_flag(name)}: expected numbers in [0, 1), got {value}")


# Sizes as the flags write them ("1024x512", width first) -> the (H, W) fields; config files use these keys.
WH_SIZE_KEYS = {"target_size": "target_size_hw", "source_size": "source_size_hw"}


def read_config_file(path: str | Path) -> dict:
    """Settings from a JSON or YAML file (`--config`): a mapping of TrainConfig field names to values; sizes may be
    written as the flags write them (`target_size: 1024x512`, `source_size: 896x512`: width first)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--config {path}: no such file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml  # PyYAML, installed with ray; only YAML configs need it

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as exc:  # any parse failure is bad input
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--config {path}: not valid JSON/YAML ({first})") from None
    if not isinstance(values, dict):
        raise InputError(f"--config {path}: expected a mapping of settings, got {type(values).__name__}")
    for key, field in WH_SIZE_KEYS.items():
        if key in values:
            if field in values:
                raise InputError(f"--config {path}: give {key} (WIDTHxHEIGHT) or {field} ([H, W]), not both")
            values[field] = list(parse_size_wh(values.pop(key), f"--config {path}: {key}")[::-1])
    _check_known(values, f"--config {path}")
    return values


def resume_mismatch(saved: dict, config: TrainConfig) -> str | None:
    """The first setting (other than RESUMABLE_FIELDS) in which a checkpoint's config differs, or None."""
    current = config.to_dict()
    for name in sorted(set(saved) | set(current)):
        if name in RESUMABLE_FIELDS:
            continue
        if saved.get(name) != current.get(name):
            return f"{name}: checkpoint has {saved.get(name)!r}, this run {current.get(name)!r}"
    return None
