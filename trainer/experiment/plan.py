"""What `make demo` runs: the preset, the table's rows (variants), and the steps that world -> i2vda-prep ->
i2vda-train -> i2vda-eval make of them, each with the test that its outputs are complete."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pipeline.sources import size_text
from trainer.experiment.outputs import (
    Paths,
    eval_done,
    pretrain_done,
    store_done,
    training_done,
    training_progress,
    world_done,
)
from trainer.experiment.runner import Step
from trainer.training.config import TrainConfig

# The paper's schedule (§4.2, Table 4), read from its one home, TrainConfig's defaults: M' first copied at 16%.
_TRAIN_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
PAPER_MAX_ITER, PAPER_ITER_COPY = _TRAIN_DEFAULTS["max_iter"], _TRAIN_DEFAULTS["iter_copy"]
PREP_TOOL, TRAIN_TOOL, EVAL_TOOL, PRETRAIN_TOOL = "i2vda-prep", "i2vda-train", "i2vda-eval", "i2vda-pretrain"
RAY_DEFAULTS = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # as the Makefile: local, no network
VIPER_STORE, TARGET_STORE, VAL_STORE = "viper", "cityscapes_seq", "cityscapes_val"
ORACLE_STORE = "cityscapes"  # `i2vda-prep source --src cityscapes`: the annotated Cityscapes train frames
# The main rows: the baselines (source-only also scored with AdaBN) and the paper's I2VDA, under the demo's preset.
PREFIX = ("source_only", "source_only_adabn", "adv_only", "i2vda")
ADABN_FRAMES = 48  # target train frames for the AdaBN row (i2vda-eval --adapt-bn)
ANALOG_DATA = "imagenet_analog"  # the world's ImageNet analog (i2vda-prep demo-world --analog-pictures)
REGIMES = ("finetune", "scratch")  # the paper's regime (the default), and the first release's from-scratch one


@dataclass(frozen=True)
class Variant:
    """One row of the demo's table: its title, its i2vda-train flags and the source store it learns from."""

    title: str
    flags: tuple[str, ...]
    weight: int  # to start the longest runs first: 600 iterations took 83 s (source-only), 359 s (adv), 552 s (I2VDA)
    source: str = VIPER_STORE
    train_as: str | None = None  # a row that only evaluates another row's training run differently
    eval_flags: tuple[str, ...] = ()  # extra i2vda-eval flags of this row


_I2VDA = ("--method", "i2vda")  # the paper's method and defaults (M' in eval mode), under the preset
_BN_ALL = ("--bn-stats", "all")  # PyTorch's default: every forward of M feeds the running statistics
# M' first copied, and L_tc launched, at half the schedule instead of the paper's 16% (beyond the paper: a better
# proxy at launch; README). "{half}" is filled with max_iter // 2 in train_args.
_LATE = (*_I2VDA, "--iter-copy", "{half}", "--iter-launch", "{half}")
VARIANTS = {
    "source_only": Variant("Source only", ("--method", "source_only"), 1),
    "source_only_adabn": Variant(
        "Source only + AdaBN",
        ("--method", "source_only"),
        1,
        train_as="source_only",
        eval_flags=("--adapt-bn", str(ADABN_FRAMES)),
    ),
    "adv_only": Variant("Adversarial only (Table 3 baseline)", ("--method", "adv_only"), 2),
    "i2vda": Variant("I2VDA (paper: eval-mode M')", _I2VDA, 3),
    "no_temporal_aug": Variant("I2VDA w/o temporal augmentation", (*_I2VDA, "--no-temporal-aug"), 3),
    "no_tc": Variant("I2VDA w/o temporal consistency", (*_I2VDA, "--no-tc"), 2),
    "no_occlusion": Variant("I2VDA w/o occlusion mask", (*_I2VDA, "--no-occlusion"), 3),
    "no_entropy": Variant("I2VDA w/o entropy mask", (*_I2VDA, "--no-entropy"), 3),
    "online_linear": Variant("I2VDA, linear F(I1, It)", (*_I2VDA, "--online-flow", "linear"), 3),
    "i2vda_late": Variant("I2VDA, M' launched at half the schedule", _LATE, 3),
    "late_no_temporal_aug": Variant("I2VDA (late M') w/o temporal augmentation", (*_LATE, "--no-temporal-aug"), 3),
    "i2vda_cb": Variant("I2VDA + class-balanced PL (CBST)", (*_I2VDA, "--pl-select", "class-balanced"), 3),
    "proxy_batch": Variant("I2VDA, M' with batch statistics", (*_I2VDA, "--proxy-bn", "batch"), 3),
    "proxy_target": Variant("I2VDA, M' with re-estimated target statistics", (*_I2VDA, "--proxy-bn", "target"), 3),
    "adv_only_bn_all": Variant("Adversarial only, BN statistics of all domains", ("--method", "adv_only", *_BN_ALL), 2),
    "i2vda_bn_all": Variant("I2VDA (paper), BN statistics of all domains", (*_I2VDA, *_BN_ALL), 3),
    "oracle": Variant("Oracle (target labels)", ("--method", "source_only"), 1, source=ORACLE_STORE),
}
# Paired differences in the table: each I2VDA row against the baselines, and the full method against its ablations.
PAIRS = (
    ("i2vda", "adv_only"),
    ("i2vda", "source_only_adabn"),
    ("i2vda", "source_only"),
    ("i2vda", "no_temporal_aug"),
    ("i2vda", "no_tc"),
    ("i2vda_late", "adv_only"),
    ("i2vda_late", "source_only_adabn"),
    ("i2vda_late", "late_no_temporal_aug"),
    ("i2vda_late", "no_tc"),
    ("i2vda_cb", "i2vda"),
    ("proxy_batch", "i2vda"),
    ("proxy_target", "i2vda"),
    ("i2vda_bn_all", "adv_only_bn_all"),
)


@dataclass(frozen=True)
class DemoPreset:
    """The fixed demo: world, store sizes, init, network and schedule, sized for `make demo` on a 2-core CPU.

    The default regime mirrors the paper's where the method depends on it (docs/DEMO.md has the calibration): every
    method fine-tunes from an init pretrained on the world's ImageNet analog, and the target set is broad enough that
    each pair is drawn about once. `scratch` is the first release's regime (random init, 10 train snippets), kept to
    reproduce its table."""

    regime: str = "finetune"
    world_seed: int = 0
    val_snippets: int = 8  # the world's default is 4: more annotated val frames make the demo's mIoU less noisy
    # 40 snippets x 29 pairs = 1160 pairs for 600 x 2 draws: each pair about once over the schedule, as the paper's
    # run draws 100k pairs from ~86k (2,975 scenes); the first release had 10 snippets, each pair drawn 4 times.
    train_snippets: int = 40
    synthia_frames: int = 0  # the demo adapts VIPER -> Cityscapes only; no SYNTHIA frames to render
    analog_pictures: int = 600  # ImageNet analog: 600 pictures -> 3150 train and 450 val crops; 0 = random init
    pretrain_iters: int = 600  # i2vda-pretrain, batch 32: ~40 s on one core, within make demo's budget
    pretrain_lr: float = 0.05
    target_size_wh: tuple[int, int] = (256, 128)  # a quarter of the paper's 1024x512 ...
    viper_size_wh: tuple[int, int] = (224, 128)  # ... and of VIPER's 896x512
    flow: str = "dis"  # no FlowNet2 weights can be fetched here
    arch: str = "deeplab_tiny"
    max_iter: int = 600
    batch_size: int = 2  # the paper's 2 (one per GPU on two GPUs)
    # Fine-tuning from the init: the lr of a halving grid from 0.01 that maximises adversarial-only (docs/DEMO.md,
    # calibration); the paper fine-tunes its ResNet-101 at 2.5e-4.
    lr: float = 0.000625
    lr_d: float = 1e-4  # paper §4.2
    disc_width: int = 16  # D's ndf: AdaptSegNet's 64 costs more than deeplab_tiny itself on 2 CPU cores
    # Which of M's forwards feed its BN running statistics, for every method that sees target frames: target frames
    # only, chosen on the adversarial-only baseline (37.5 against 33.8 with all, seeds 0-1; docs/DEMO.md).
    bn_stats: str = "target"
    checkpoints: int = 4  # per run: i2vda-eval reports the last one and the best on val
    num_workers: int = 0  # one core per training run: decoding in the training process
    shuffle_buffer: int = 200  # samples per stream: about a shard and a half of target pairs

    @property
    def iter_copy(self) -> int:
        """ITER_COPY (= ITER_LAUNCH) at the paper's fraction of the shorter schedule."""
        return max(1, round(self.max_iter * PAPER_ITER_COPY / PAPER_MAX_ITER))

    @property
    def world_counts(self) -> dict:
        """The demo-world options the preset sets (world.json records them)."""
        return {
            "val_snippets": self.val_snippets,
            "train_snippets": self.train_snippets,
            "synthia_frames": self.synthia_frames,
            "analog_pictures": self.analog_pictures,
        }

    @property
    def pretrain_settings(self) -> dict:
        """What i2vda-pretrain is asked for (its record FILE.json holds the same values)."""
        return {"arch": self.arch, "iters": self.pretrain_iters, "lr": self.pretrain_lr, "seed": self.world_seed}

    @property
    def checkpoint_interval(self) -> int:
        return max(1, self.max_iter // self.checkpoints)

    def lines(self) -> list[str]:
        """The preset in words, for results.md."""
        start = (
            f"{self.arch} fine-tuned from the world's ImageNet analog ({self.analog_pictures} pictures, "
            f"{self.pretrain_iters} pretraining iterations)"
            if self.analog_pictures
            else f"{self.arch} from scratch"
        )
        return [
            f"Demo world seed {self.world_seed} ({self.regime} regime, {self.train_snippets} train snippets); target "
            f"{size_text(self.target_size_wh)}, VIPER {size_text(self.viper_size_wh)}; {self.flow} flow; {start}; "
            f"{self.max_iter} iterations of batch {self.batch_size}, lr {self.lr:g} (D {self.lr_d:g}, ndf "
            f"{self.disc_width}), ITER_COPY = ITER_LAUNCH = {self.iter_copy}; --bn-stats {self.bn_stats} for every "
            "method that sees target frames."
        ]


# The first release's regime: random weights, 10 train snippets (each pair drawn 4 times), lr 0.01 from scratch, and
# M's BN statistics from target frames (chosen then on adversarial-only); docs/DEMO.md keeps its table and finding.
SCRATCH = DemoPreset(regime="scratch", train_snippets=10, analog_pictures=0, lr=0.01, bn_stats="target")


def preset_of(regime: str) -> DemoPreset:
    """The preset of a regime (REGIMES)."""
    return SCRATCH if regime == "scratch" else DemoPreset()


def init_path(preset: DemoPreset, paths: Paths) -> Path | None:
    """The init every run fine-tunes from (written by the pretrain step), or None in the from-scratch regime."""
    return paths.world / f"{preset.arch}_imagenet_analog.pth" if preset.analog_pictures else None


def _prep(name: str, args: tuple[str, ...], done, **options) -> Step:
    """An i2vda-prep step: Ray spreads it over every core, so its threads are not pinned to a slot."""
    return Step(name, PREP_TOOL, args, done, pin_threads=False, **options)


def plan_prep(preset: DemoPreset, paths: Paths, oracle: bool) -> list[Step]:
    """World, the init pretrained on its ImageNet analog, then the target pairs, the VIPER store, the val store (and
    the oracle's labelled target store)."""
    w, s = paths.world, str(paths.stores)
    counts = [(f"--{name.replace('_', '-')}", str(value)) for name, value in preset.world_counts.items()]
    world = _prep(
        "world",
        ("demo-world", "--out", str(w), "--seed", str(preset.world_seed), *sum(counts, ()), "--overwrite"),
        partial(world_done, w, preset.world_seed, preset.world_counts),
        clears=(paths.stores, paths.runs, paths.evals),
    )
    target = ("--root", str(w / "cityscapes"), "--out", s, "--size", size_text(preset.target_size_wh))
    steps = [world, *plan_pretrain(preset, paths)]
    steps += [
        _prep(
            "prep_flows",
            ("flows", "--src", TARGET_STORE, *target, "--flow", preset.flow),
            partial(store_done, paths.stores / TARGET_STORE, preset.target_size_wh),
        ),
        _prep(
            "prep_source",
            (
                "source",
                "--src",
                VIPER_STORE,
                "--root",
                str(w / "viper"),
                "--out",
                s,
                "--size",
                size_text(preset.viper_size_wh),
            ),
            partial(store_done, paths.stores / VIPER_STORE, preset.viper_size_wh),
        ),
        _prep(
            "prep_val",
            ("val", *target, "--flow", preset.flow),
            partial(store_done, paths.stores / VAL_STORE, preset.target_size_wh),
        ),
    ]
    if oracle:
        steps.append(
            _prep(
                "prep_oracle",
                ("source", "--src", ORACLE_STORE, *target, "--protocol", "viper15"),
                partial(store_done, paths.stores / ORACLE_STORE, preset.target_size_wh),
            )
        )
    return steps


def plan_pretrain(preset: DemoPreset, paths: Paths) -> list[Step]:
    """The init on the world's ImageNet analog (none in the from-scratch regime): one core, like a training run."""
    init = init_path(preset, paths)
    if init is None:
        return []
    settings = preset.pretrain_settings
    args = [f"--{name}={value}" for name, value in settings.items()]
    return [
        Step(
            "pretrain",
            PRETRAIN_TOOL,
            ("--data", str(paths.world / ANALOG_DATA), "--out", str(init), *args),
            partial(pretrain_done, init, settings),
            clears=(paths.runs, paths.evals),
        )
    ]


def run_of(variant: str) -> str:
    """The variant whose training run a row scores: its own, or the one it only evaluates differently."""
    return VARIANTS[variant].train_as or variant


def _bn_stats(preset: DemoPreset, variant: str) -> tuple[str, ...]:
    """The preset's --bn-stats for a method that sees target frames (a variant's own flag, later, wins)."""
    return () if "source_only" in VARIANTS[variant].flags else ("--bn-stats", preset.bn_stats)


def train_args(
    preset: DemoPreset, paths: Paths, variant: str, seed: int, out: Path | None = None, extra: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """i2vda-train flags of one run: the preset's, the init, the variant's (then `extra`), and --resume so a crashed
    run goes on; into `out` (default: the variant's run folder)."""
    p = preset
    settings = {
        "shards": paths.stores,
        "source": VARIANTS[variant].source,
        "target": TARGET_STORE,
        "out": out or paths.run(variant, seed),
        "arch": p.arch,
        "max-iter": p.max_iter,
        "batch-size": p.batch_size,
        "lr": p.lr,
        "lr-d": p.lr_d,
        "disc-width": p.disc_width,
        "iter-copy": p.iter_copy,
        "iter-launch": p.iter_copy,
        "seed": seed,
        "checkpoint-interval": p.checkpoint_interval,
        "num-workers": p.num_workers,
        "shuffle-buffer": p.shuffle_buffer,
    }
    init = init_path(p, paths)
    if init is not None:  # the paper's regime: every method fine-tunes from the same init, read as DeepLab's file
        settings |= {"init": init, "init-format": "deeplab"}
    flags = (f.format(half=p.max_iter // 2) for f in VARIANTS[variant].flags)
    pairs = (x for name, value in settings.items() for x in (f"--{name}", str(value)))
    return (*pairs, *_bn_stats(p, variant), *flags, *extra, "--resume", "latest")


def plan_runs(preset: DemoPreset, paths: Paths, variants, seeds) -> list[list[Step]]:
    """One chain per training run and seed (train, then the eval of every row that scores that run), heaviest first
    so that parallel slots finish together."""
    groups: dict[str, list[str]] = {}
    for variant in variants:
        groups.setdefault(run_of(variant), []).append(variant)
    chains = []
    for trained in sorted(groups, key=lambda v: -VARIANTS[v].weight):  # stable: ties keep the given order
        for seed in seeds:
            run = paths.run(trained, seed)
            chain = [
                Step(
                    f"train_{trained}_seed{seed}",
                    TRAIN_TOOL,
                    train_args(preset, paths, trained, seed),
                    partial(training_done, run, preset.max_iter),
                    progress=partial(training_progress, run, preset.max_iter),
                )
            ]
            for variant in groups[trained]:
                out = paths.eval(variant, seed)
                chain.append(
                    Step(
                        f"eval_{variant}_seed{seed}",
                        EVAL_TOOL,
                        (
                            "--ckpt",
                            str(run),
                            "--val",
                            str(paths.stores / VAL_STORE),
                            "--out",
                            str(out),
                            *VARIANTS[variant].eval_flags,
                        ),
                        partial(eval_done, out, preset.max_iter),
                    )
                )
            chains.append(chain)
    return chains
