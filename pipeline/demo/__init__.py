"""The built-in demo world: procedural street scenes in the real datasets' layouts (see DESIGN.md)."""

from pipeline.demo.world import WorldConfig, write_world

__all__ = ["WorldConfig", "write_world"]
