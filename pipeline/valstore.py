"""Compatibility alias for scripts written before the val store moved behind the shard face: import
`ValStore`, `ValWriter`, `encode_val_item`, `tc_clip_bounds` from `pipeline.shards` instead."""

from pipeline.shards.valstore import VAL_FILE, VAL_FORMAT, ValStore, ValWriter, encode_val_item, tc_clip_bounds

__all__ = ["VAL_FILE", "VAL_FORMAT", "ValStore", "ValWriter", "encode_val_item", "tc_clip_bounds"]
