"""Optical flow: FlowNet2 in plain PyTorch, OpenCV DIS, backward warp, `.flo` files, colour wheel, shard codec.

Public names (imported lazily so that `import pipeline.flow.warp` stays light): `FlowNet2`, `load_estimator`, the
registry of estimators (`ESTIMATORS`, `EstimatorEntry`, `EstimatorOption`) and their interface (`FlowEstimator`),
`warp`, `forward_backward_consistent`, `read_flo`, `write_flo`, `flow_to_color`, and the state-dict fit check that
every weight loader shares (`state_dict_fit`, `StateDictFit`).
"""

from __future__ import annotations

import importlib

# Eager: the function shares its name with its module, which a lazy import would shadow.
from pipeline.flow.warp import forward_backward_consistent as forward_backward_consistent
from pipeline.flow.warp import warp as warp

_EXPORTS = {
    "FlowNet2": "pipeline.flow.flownet2",
    "load_estimator": "pipeline.flow.estimators",
    "ESTIMATORS": "pipeline.flow.estimators",
    "EstimatorEntry": "pipeline.flow.estimators",
    "EstimatorOption": "pipeline.flow.estimators",
    "FlowEstimator": "pipeline.flow.interface",
    "state_dict_fit": "pipeline.flow.weights_fit",
    "StateDictFit": "pipeline.flow.weights_fit",
    "read_flo": "pipeline.flow.flo",
    "write_flo": "pipeline.flow.flo",
    "flow_to_color": "pipeline.flow.viz",
}

__all__ = sorted([*_EXPORTS, "warp", "forward_backward_consistent"])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.flow' has no attribute {name!r}")
