"""How a state dict fits a network's, key for key: the check every weight loader shares (FlowNet2's file, the
segmenter's inits and our checkpoints), so that a file of another network is refused with one line naming its keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

# How many key names an error message lists before "...": enough to recognise the file, short enough for one line.
KEYS_SHOWN = 4


def listed(keys, shown: int = KEYS_SHOWN) -> str:
    """'a, b, c, d, ...': the first `shown` keys of a refusal."""
    keys = list(keys)
    text = ", ".join(keys[:shown])
    return f"{text}, ..." if len(keys) > shown else text


@dataclass(frozen=True)
class StateDictFit:
    """How a state dict fits a network's, key for key (`state_dict_fit`); every tuple is in the network's order."""

    missing: tuple[str, ...]  # keys of the network the file lacks
    unexpected: tuple[str, ...]  # keys of the file the network does not have
    not_tensors: tuple[str, ...]  # shared keys whose file entry is not a tensor
    wrong_shapes: tuple[tuple[str, tuple, tuple], ...]  # (key, shape in the file, shape in the network)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.not_tensors or self.wrong_shapes)

    def describe(self, shown: int = KEYS_SHOWN) -> str:
        """One line: 'missing a, b; unexpected c; not tensors d; shape (file vs model) e (1,) vs (2,)', keys sorted."""
        shapes = [f"{key} {have} vs {want}" for key, have, want in self.wrong_shapes]
        parts = [
            f"{what} {listed(sorted(keys), shown)}"
            for what, keys in (
                ("missing", self.missing),
                ("unexpected", self.unexpected),
                ("not tensors", self.not_tensors),
                ("shape (file vs model)", shapes),
            )
            if keys
        ]
        return "; ".join(parts)


def state_dict_fit(expected: Mapping[str, torch.Tensor], given: Mapping, optional_suffix: str | None = None):
    """Compare a file's state dict with a network's (`model.state_dict()`); keys ending in `optional_suffix` (e.g.
    BatchNorm's num_batches_tracked, which old files lack) may be missing. -> StateDictFit."""
    optional = optional_suffix or None
    return StateDictFit(
        missing=tuple(k for k in expected if k not in given and not (optional and k.endswith(optional))),
        unexpected=tuple(k for k in given if k not in expected),
        not_tensors=tuple(k for k in expected if k in given and not isinstance(given[k], torch.Tensor)),
        wrong_shapes=tuple(
            (k, tuple(given[k].shape), tuple(expected[k].shape))
            for k in expected
            if isinstance(given.get(k), torch.Tensor) and given[k].shape != expected[k].shape
        ),
    )
