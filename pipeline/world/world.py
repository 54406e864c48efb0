"""`write_world`: render the demo world and write it in the real datasets' layouts, with a summary and a picture."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.errors import InputError
from pipeline.sources.images import write_png
from pipeline.world import layouts
from pipeline.world.classes import NUM_WORLD_CLASSES
from pipeline.world.flow_gt import ground_truth_flow
from pipeline.world.shots import draw_shot, render_frame
from pipeline.world.styles import camera_style, game_style
from pipeline.world.summary import world_shares, world_sheet

TARGET_FPS = 17.0  # Cityscapes sequences
VIPER_FPS, VIPER_LABEL_EVERY = 15.0, 10  # VIPER labels the frames whose number ends in 0
SYNTHIA_FPS = 5.0  # SYNTHIA-SEQS frames are far apart: a long drive in a few hundred frames
SYNTHIA_FRAMES_PER_STREET = 40  # the drive turns into a new street every 40 frames (8 s), for varied scenes
SYNTHIA_DAWN_CAST = (1.08, 0.95, 0.82)  # SEQS-04-DAWN: low, warm light
EGO_HOOD_FRAC = {"target": 0.10, "viper": 0.12, "synthia": 0.0}  # bonnet height at the centre, fraction of H
TRAIN_CITIES, VAL_CITIES = ("ashbury", "brackwell", "corrin"), ("dunmore", "elmstead")  # invented names
SNIPPET_START_STEP, SNIPPET_START_CHOICES = 30, 10  # a snippet's first frame is one of 0, 30, ..., 270
DOMAIN_SEED = {"target": 0, "viper": 1, "synthia": 2}  # streams of the random generator, per domain
CONTACT_SHEET_SAMPLES = 2  # frames per domain on the contact sheet
SHEET_NAME, SUMMARY_NAME = "contact_sheet.png", "world.json"
OUTPUTS = (layouts.CITYSCAPES_DIR, layouts.VIPER_DIR, layouts.SYNTHIA_PARENT_DIR, SHEET_NAME, SUMMARY_NAME)


@dataclass(frozen=True)
class WorldConfig:
    """Sizes, counts and the strength of the domain gap of a demo world."""

    target_size_wh: tuple[int, int] = (512, 256)  # Cityscapes is 2048x1024; prep resizes to the training size
    viper_size_wh: tuple[int, int] = (448, 256)  # VIPER 1920x1080
    synthia_size_wh: tuple[int, int] = (320, 192)  # SYNTHIA 1280x760
    train_snippets: int = 10
    val_snippets: int = 4
    snippet_frames: int = 30  # Cityscapes snippets hold 30 frames ...
    annotated_index: int = 19  # ... and the 20th is annotated
    viper_sequences: int = 6
    viper_frames: int = 240  # labelled frames over all sequences
    synthia_frames: int = 200
    style_gap: float = 1.0  # 0: the target looks like the sources; 1: the full camera look
    colour_gap: float | None = None  # surface colours' share of the camera look; None = style_gap
    train_flow: bool = False  # also write ground-truth flow for the train snippets
    hfov_deg: float = 60.0  # Cityscapes' camera sees about 50 degrees; a little wider shows more of the street
    max_layers: int = 12  # nearest surfaces per pixel column considered by the ray caster

    def check(self) -> None:
        """Refuse impossible settings with one line naming the option."""
        for name in ("target_size_wh", "viper_size_wh", "synthia_size_wh"):
            if len(getattr(self, name)) != 2 or min(getattr(self, name)) < 8:
                raise InputError(f"--{name[:-3].replace('_', '-')}: expected WIDTHxHEIGHT of at least 8x8 pixels")
        for name in ("train_snippets", "val_snippets", "viper_sequences", "viper_frames", "synthia_frames"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')}: expected a count >= 0, got {getattr(self, name)}")
        if self.snippet_frames < 2:
            raise InputError(f"--snippet-frames: expected at least 2 frames, got {self.snippet_frames}")
        if not 0 <= self.annotated_index < self.snippet_frames:
            raise InputError(
                f"--annotated-index {self.annotated_index}: expected 0..{self.snippet_frames - 1} "
                f"(a frame of the {self.snippet_frames}-frame snippet)"
            )
        if self.viper_frames and not self.viper_sequences:
            raise InputError("--viper-sequences: expected at least 1 when --viper-frames is not 0")
        if not 0.0 <= self.style_gap <= 1.0:
            raise InputError(f"--style-gap: expected a value in [0, 1], got {self.style_gap}")
        if self.colour_gap is not None and not 0.0 <= self.colour_gap <= 1.0:
            raise InputError(f"--colour-gap: expected a value in [0, 1], got {self.colour_gap}")
        if not 10.0 <= self.hfov_deg <= 150.0 or self.max_layers < 1:
            raise InputError("hfov_deg must lie in [10, 150] degrees and max_layers be at least 1")


def _rng(seed: int, domain: str, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, DOMAIN_SEED[domain], *stream])


def _write_snippet(
    out: Path,
    seed: int,
    config: WorldConfig,
    split: str,
    index: int,
    j: int,
    style,
    histogram: np.ndarray,
    samples: list,
) -> dict:
    """One Cityscapes-Seq snippet: its frames, the annotated frame's labelIds and (val) both flows of each pair."""
    rng = _rng(seed, "target", index)
    duration = (config.snippet_frames - 1) / TARGET_FPS
    shot = draw_shot(rng, config.target_size_wh, config.hfov_deg, duration, EGO_HOOD_FRAC["target"], style)
    cities = TRAIN_CITIES if split == "train" else VAL_CITIES
    city, seq = cities[j % len(cities)], j // len(cities)
    first = SNIPPET_START_STEP * int(rng.integers(SNIPPET_START_CHOICES))
    with_flow = split == "val" or config.train_flow
    on_sheet = split == "val" and len(samples) < CONTACT_SHEET_SAMPLES
    counts = {"target_frames": 0, "target_labels": 0, "target_flows": 0}
    previous = None  # (G-buffer, time) of the previous frame
    for i in range(config.snippet_frames):
        t, frame = i / TARGET_FPS, first + i
        rgb, gbuffer = render_frame(shot, t, style, config.max_layers, _rng(seed, "target", index, i))
        write_png(layouts.cityscapes_image(out, split, city, seq, frame), rgb)
        counts["target_frames"] += 1
        if with_flow and previous is not None:
            gb_prev, t_prev = previous
            pose, pose_prev = shot.trajectory.pose(t), shot.trajectory.pose(t_prev)
            forward = ground_truth_flow(shot.cam, shot.street, gb_prev, pose_prev, t_prev, pose, t)
            backward = ground_truth_flow(shot.cam, shot.street, gbuffer, pose, t, pose_prev, t_prev)
            layouts.write_flow(layouts.cityscapes_flow(out, split, city, seq, frame - 1, frame), forward)
            layouts.write_flow(layouts.cityscapes_flow(out, split, city, seq, frame, frame - 1), backward)
            counts["target_flows"] += 2
            if on_sheet and i == config.annotated_index + 1:
                samples[-1] = (*samples[-1][:2], forward)
        if i == config.annotated_index:
            layouts.write_cityscapes_label(layouts.cityscapes_label(out, split, city, seq, frame), gbuffer.cls)
            histogram += np.bincount(gbuffer.cls.ravel(), minlength=NUM_WORLD_CLASSES)
            counts["target_labels"] += 1
            if on_sheet:
                samples.append((rgb, gbuffer.cls, None))
        previous = (gbuffer, t) if with_flow else None
    return counts


def _write_target(out: Path, seed: int, config: WorldConfig, histogram: np.ndarray, samples: list) -> dict:
    """Cityscapes-Seq: train snippets, then val snippets (snippet index = the random stream)."""
    style = camera_style(config.style_gap, config.colour_gap)
    total = {"target_frames": 0, "target_labels": 0, "target_flows": 0}
    jobs = [("train", j, j) for j in range(config.train_snippets)]
    jobs += [("val", config.train_snippets + j, j) for j in range(config.val_snippets)]
    for split, index, j in jobs:
        counts = _write_snippet(out, seed, config, split, index, j, style, histogram, samples)
        total = {name: total[name] + counts[name] for name in total}
    return total


def _sequence_lengths(total: int, sequences: int) -> list[int]:
    """`total` frames split as evenly as possible over `sequences` sequences."""
    return [total // sequences + (1 if q < total % sequences else 0) for q in range(sequences)]


def _write_viper(out: Path, seed: int, config: WorldConfig, histogram: np.ndarray, samples: list) -> dict:
    """VIPER: JPEG frames and indexed-PNG labels of every 10th frame of a few drives."""
    style = game_style()
    written = 0
    lengths = _sequence_lengths(config.viper_frames, config.viper_sequences) if config.viper_sequences else []
    for q, length in enumerate(lengths):
        if length == 0:
            continue
        rng = _rng(seed, "viper", q)
        duration = VIPER_LABEL_EVERY * length / VIPER_FPS
        shot = draw_shot(rng, config.viper_size_wh, config.hfov_deg, duration, EGO_HOOD_FRAC["viper"], style)
        for i in range(1, length + 1):
            frame = VIPER_LABEL_EVERY * i
            rgb, gbuffer = render_frame(shot, frame / VIPER_FPS, style, config.max_layers, _rng(seed, "viper", q, i))
            layouts.write_jpeg(layouts.viper_image(out, q + 1, frame), rgb)
            layouts.write_viper_label(layouts.viper_label(out, q + 1, frame), gbuffer.cls)
            histogram += np.bincount(gbuffer.cls.ravel(), minlength=NUM_WORLD_CLASSES)
            written += 1
            if len(samples) < CONTACT_SHEET_SAMPLES and i == 1:
                samples.append((rgb, gbuffer.cls, None))
    return {"viper_frames": written}


def _write_synthia(out: Path, seed: int, config: WorldConfig, histogram: np.ndarray, samples: list) -> dict:
    """SYNTHIA-SEQS-04-DAWN: one drive through several streets, every frame labelled (class in R, instance in G)."""
    style = game_style(cast=SYNTHIA_DAWN_CAST)
    sample_every = max(config.synthia_frames // CONTACT_SHEET_SAMPLES, 1)
    for street_index, start in enumerate(range(0, config.synthia_frames, SYNTHIA_FRAMES_PER_STREET)):
        length = min(SYNTHIA_FRAMES_PER_STREET, config.synthia_frames - start)
        rng = _rng(seed, "synthia", street_index)
        duration = (length - 1) / SYNTHIA_FPS
        shot = draw_shot(rng, config.synthia_size_wh, config.hfov_deg, duration, EGO_HOOD_FRAC["synthia"], style)
        for frame in range(start, start + length):
            t = (frame - start) / SYNTHIA_FPS
            rgb, gbuffer = render_frame(shot, t, style, config.max_layers, _rng(seed, "synthia", street_index, frame))
            write_png(layouts.synthia_image(out, frame), rgb)
            layouts.write_synthia_label(layouts.synthia_label(out, frame), gbuffer.cls, gbuffer.instance)
            histogram += np.bincount(gbuffer.cls.ravel(), minlength=NUM_WORLD_CLASSES)
            if frame % sample_every == 0 and len(samples) < CONTACT_SHEET_SAMPLES:
                samples.append((rgb, gbuffer.cls, None))
    return {"synthia_frames": config.synthia_frames}


def _prepare(out: Path, overwrite: bool) -> None:
    """Create `out`; a previous world there is refused, or removed with `overwrite` (only the world's own files)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a directory")
    present = [name for name in OUTPUTS if (out / name).exists()]
    if present and not overwrite:
        raise InputError(f"--out {out}: already holds a world ({', '.join(present)}); pass --overwrite to replace it")
    for name in present:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_world(out: Path, seed: int = 0, config: WorldConfig | None = None, overwrite: bool = False) -> dict:
    """Render the demo world into `out` (Cityscapes-Seq, VIPER, SYNTHIA-SEQS layouts); returns its summary.

    The same seed and config give byte-identical files. The summary (`out/world.json`) holds the config, the seed,
    file counts and the per-class pixel shares under the viper15 and synthia11 protocols; the returned dict adds
    the seconds taken.
    """
    config = config or WorldConfig()
    config.check()
    if seed < 0:
        raise InputError(f"--seed: expected an integer >= 0, got {seed}")
    out = Path(out)
    _prepare(out, overwrite)
    start = time.perf_counter()
    histograms = {domain: np.zeros(NUM_WORLD_CLASSES, dtype=np.int64) for domain in DOMAIN_SEED}
    samples: dict[str, list] = {domain: [] for domain in DOMAIN_SEED}
    counts = {}
    for domain, writer in (("target", _write_target), ("viper", _write_viper), ("synthia", _write_synthia)):
        counts.update(writer(out, seed, config, histograms[domain], samples[domain]))
    write_png(out / SHEET_NAME, world_sheet(samples))
    summary = {
        "tool": f"i2vda {__version__} demo-world",
        "seed": seed,
        "config": asdict(config),
        "counts": counts,
        "class_share": world_shares(histograms),
    }
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")  # no timing: same seed, same bytes
    return {**summary, "seconds": round(time.perf_counter() - start, 1)}
