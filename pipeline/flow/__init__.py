"""Optical flow: FlowNet2 in plain PyTorch, OpenCV DIS, backward warp, `.flo` files, colour wheel, shard codec.

Public names (imported lazily so that `import pipeline.flow.warp` stays light):
`FlowNet2`, `load_estimator`, `warp`, `read_flo`, `write_flo`, `flow_to_color`.
"""

from __future__ import annotations

import importlib

# Eager: the function shares its name with its module, which a lazy import would shadow.
from pipeline.flow.warp import warp as warp

_EXPORTS = {
    "FlowNet2": "pipeline.flow.flownet2",
    "load_estimator": "pipeline.flow.estimators",
    "read_flo": "pipeline.flow.flo",
    "write_flo": "pipeline.flow.flo",
    "flow_to_color": "pipeline.flow.viz",
}

__all__ = sorted([*_EXPORTS, "warp"])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.flow' has no attribute {name!r}")
