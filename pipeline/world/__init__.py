"""The built-in demo world: procedural street scenes in the real datasets' layouts (README, "Results on the built-in
world")."""

from pipeline.world.world import WorldConfig, write_world

__all__ = ["WorldConfig", "write_world"]
