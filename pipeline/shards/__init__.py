"""The data contract between `i2vda-prep` and the trainer: samples, shard tars, stores, manifests, the val store.

Three layers, each usable without the one above it and without Ray:
- `samples.py`: one sample's WebDataset members, encoded and decoded;
- `tar.py`: one shard tar, written atomically (`write_shard`) and read raw (`raw_samples`, the one tar reader);
- `remote.py`: stores at a URL (http://, https://, pipe:COMMAND), read as streams with bounded retries;
- `runs.py`: shard layout 3 of target stores, runs of consecutive frames (`RunEncoder`), read back as pairs
  (`raw_items`: what readers train on);
- `store.py`: a store folder and its manifest (`read_manifest`, the one manifest reader, checking `schema.py`'s
  MANIFEST_SCHEMA; `open_store` -> `StoreInfo`);
and `valstore.py`, the Cityscapes-val HDF5 store for mIoU and TC. Import from here, not from the modules.
See stores/README.md for the layout on disk.
"""

from pipeline.atomic import (
    PARTIAL_SUFFIX,
    atomic_path,
    file_sha256,
    remove_stale_partials,
    write_bytes_atomic,
    write_text_atomic,
)
from pipeline.shards.remote import RemoteFile, RemotePath, is_remote, store_location
from pipeline.shards.runs import (
    PAIR_LAYOUT,
    RUN_LAYOUT,
    TARGET_LAYOUTS,
    RunEncoder,
    expand_run,
    expand_runs,
    raw_items,
)
from pipeline.shards.samples import (
    FRAME_MODES,
    FRAME_PNG_PARAMS,
    LABEL_PNG_PARAMS,
    check_key,
    decode_sample,
    encode_source_sample,
    encode_target_sample,
    png_bytes,
    png_pixels,
)
from pipeline.shards.schema import MANIFEST_FORMAT, SOURCE_KIND, TARGET_KIND, VAL_KIND
from pipeline.shards.store import (
    MANIFEST_NAME,
    ShardEntry,
    StoreInfo,
    check_manifest,
    open_store,
    read_manifest,
    read_samples,
    store_shards,
    write_manifest,
    write_store,
)
from pipeline.shards.tar import SHARD_SUFFIX, raw_samples, shard_name, write_shard
from pipeline.shards.valstore import VAL_FILE, ValStore, ValWriter, encode_val_item, tc_clip_bounds

__all__ = [
    "FRAME_MODES",
    "FRAME_PNG_PARAMS",
    "LABEL_PNG_PARAMS",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "PAIR_LAYOUT",
    "PARTIAL_SUFFIX",
    "RUN_LAYOUT",
    "SHARD_SUFFIX",
    "SOURCE_KIND",
    "TARGET_LAYOUTS",
    "TARGET_KIND",
    "VAL_FILE",
    "VAL_KIND",
    "RemoteFile",
    "RemotePath",
    "RunEncoder",
    "ShardEntry",
    "StoreInfo",
    "ValStore",
    "ValWriter",
    "atomic_path",
    "check_key",
    "check_manifest",
    "decode_sample",
    "encode_source_sample",
    "encode_target_sample",
    "encode_val_item",
    "expand_run",
    "expand_runs",
    "file_sha256",
    "is_remote",
    "open_store",
    "png_bytes",
    "png_pixels",
    "raw_items",
    "raw_samples",
    "read_manifest",
    "read_samples",
    "remove_stale_partials",
    "shard_name",
    "store_location",
    "store_shards",
    "tc_clip_bounds",
    "write_bytes_atomic",
    "write_manifest",
    "write_shard",
    "write_store",
    "write_text_atomic",
]
