"""The schema of manifest.json: every field a reader uses, with the type and range it must have.

`read_manifest` (store.py, the one reader) parses the file with `parse_manifest` and checks it with
`check_manifest_schema` before anything else looks at it, so a manifest of the wrong shape is one InputError line
naming the field (`shards[0].name: expected ...`), never a KeyError, an OverflowError or a RecursionError deep in a
reader. Checked: the file's size (MAX_MANIFEST_BYTES, before it is read), its nesting (MAX_DEPTH), finite numbers
(no NaN or Infinity), booleans that are booleans, counts that are non-negative integers, sizes of 1..MAX_SIDE_PX, and
shard names that are plain file names inside the store folder (no separator, no `..`, no absolute path).

Fields not listed here are allowed (a newer writer's) but not used. A new field is one line in MANIFEST_FIELDS (or
SHARD_FIELDS, CONFIG_FIELDS), next to the `StoreInfo` field that reads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping

from pipeline.errors import InputError
from pipeline.limits import MAX_SIDE_PX

MANIFEST_FORMAT = "i2vda-store/1"  # bump when the manifest's meaning changes
TARGET_KIND = "target_pairs"
SOURCE_KIND = "source"
VAL_KIND = "val"
STORE_KINDS = (TARGET_KIND, SOURCE_KIND, VAL_KIND)
MAX_MANIFEST_BYTES = 64 << 20  # a manifest lists one line per shard: far below this even for millions of samples
MAX_DEPTH = 8  # objects and lists nested in each other; ours nest 4 deep (shards[i].skipped[j])
MAX_COUNT = 2**53  # counts and byte totals: exact as JSON numbers, far beyond any store
MAX_TEXT = 4096  # characters of a string field (names, hashes, reasons, paths)

Check = Callable[[object, str], None]  # (value, where) -> None, or raise _Invalid


class _Invalid(Exception):
    """A field that does not fit its spec: where it is and what was expected."""

    def __init__(self, where: str, expected: str, value: object = None, missing: bool = False):
        shown = "nothing (the field is missing)" if missing else _shown(value)
        super().__init__(f"{where}: expected {expected}, got {shown}")


def _shown(value) -> str:
    return json.dumps(value)[:60] if _jsonable(value) else type(value).__name__


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def string(value, where: str) -> None:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _Invalid(where, f"a string of at most {MAX_TEXT} characters", value)


def boolean(value, where: str) -> None:
    if not isinstance(value, bool):
        raise _Invalid(where, "true or false", value)


def count(value, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise _Invalid(where, f"an integer in 0..{MAX_COUNT}", value)


def number(value, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Invalid(where, "a finite number", value)


def size_wh(value, where: str) -> None:
    ok = isinstance(value, list) and len(value) == 2
    if not ok or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SIDE_PX for v in value):
        raise _Invalid(where, f"[width, height] in pixels, each 1..{MAX_SIDE_PX}", value)


def file_name(value, where: str) -> None:
    """A plain file name inside the store folder: no separator, not `.` or `..`, no NUL."""
    string(value, where)
    if not value or value in (".", "..") or any(c in value for c in "/\\\0"):
        raise _Invalid(where, "a plain file name inside the store folder", value)


def one_of(*allowed: str) -> Check:
    def check(value, where: str) -> None:
        if value not in allowed:
            raise _Invalid(where, f"one of {', '.join(allowed)}", value)

    return check


def optional(spec: Check) -> Check:
    """`spec`, or null."""

    def check(value, where: str) -> None:
        if value is not None:
            spec(value, where)

    return check


def list_of(spec: Check) -> Check:
    def check(value, where: str) -> None:
        if not isinstance(value, list):
            raise _Invalid(where, "a list", value)
        for i, item in enumerate(value):
            spec(item, f"{where}[{i}]")

    return check


def scalars(value, where: str) -> None:
    """An object of strings, finite numbers, booleans or nulls (estimator options, timing)."""
    if not isinstance(value, dict):
        raise _Invalid(where, "an object", value)
    for key, item in value.items():
        if item is not None and not isinstance(item, (str, bool)):
            number(item, f"{where}.{key}")


def record(fields: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    """An object whose listed fields (when present; `required` ones always) fit their specs."""

    def check(value, where: str) -> None:
        if not isinstance(value, dict):
            raise _Invalid(where, "an object", value)
        for name in required:
            if name not in value:
                raise _Invalid(f"{where}.{name}" if where else name, "a value", missing=True)
        for name, spec in fields.items():
            if name in value:
                spec(value[name], f"{where}.{name}" if where else name)

    return check


# What a store's samples are: at the top level, and again under "config" (where prep records every setting).
DESCRIPTION_FIELDS: dict[str, Check] = {
    "size_wh": optional(size_wh),
    "protocol": optional(string),
    "estimator": optional(string),
    "estimator_options": optional(scalars),
    "checkpoint_sha256": optional(string),
    "codec": optional(string),
    "frames": optional(string),
    "layout": optional(count),  # a target store's shard layout (pipeline/shards/runs.py); open_store checks the value
}
CONFIG_FIELDS: dict[str, Check] = {
    **DESCRIPTION_FIELDS,
    "src": optional(string),
    "split": optional(string),
    "pairs": optional(string),
    "samples_per_shard": optional(count),
    "tc_window": optional(count),
    "plan_sha256": optional(string),
}
SKIPPED_ENTRY = record({"key": string, "path": string, "reason": string}, required=("key", "path", "reason"))
SHARD_FIELDS: dict[str, Check] = {
    "name": file_name,
    "samples": count,
    "pairs": count,  # target pairs in a shard of runs (layout 3)
    "bytes": count,
    "sha256": optional(string),
    "skipped": list_of(SKIPPED_ENTRY),
}
MANIFEST_FIELDS: dict[str, Check] = {
    "format": one_of(MANIFEST_FORMAT),
    "tool_version": optional(string),
    "name": optional(string),
    "kind": optional(one_of(*STORE_KINDS)),
    "complete": boolean,
    **DESCRIPTION_FIELDS,
    "protocols": list_of(string),
    "config": record(CONFIG_FIELDS),
    "run": record({"root": optional(string), "on_error": optional(string)}),
    "num_planned": count,
    "num_samples": count,
    "num_pairs": count,
    "num_skipped": count,
    "bytes": count,
    "shards": list_of(record(SHARD_FIELDS, required=("name",))),
    "skipped": list_of(SKIPPED_ENTRY),
    "timing": scalars,
}
MANIFEST_SCHEMA = record(MANIFEST_FIELDS, required=("format",))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")  # NaN, Infinity, -Infinity: Python's json accepts them


def nesting_depth(obj, limit: int) -> int:
    """How deeply lists and objects nest in `obj` (a scalar: 0), counted without recursion; stops past `limit`."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_manifest(data: bytes, where: str) -> dict:
    """manifest.json bytes -> the checked manifest dict; anything else is one InputError line starting `where`."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise InputError(f"{where}: {len(data)} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may take")
    try:
        manifest = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:200]
        if isinstance(exc, RecursionError):
            reason = "nested too deeply"
        elif "int_max_str_digits" in reason:  # Python refuses to read an integer of more than 4300 digits
            reason = "an integer of more digits than Python reads"
        raise InputError(f"{where}: not a valid manifest ({reason})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{where}: not an i2vda store manifest (expected format {MANIFEST_FORMAT})")
    check_manifest_schema(manifest, where)
    return manifest


def check_manifest_schema(manifest: dict, where: str) -> None:
    """Refuse a manifest that does not fit MANIFEST_SCHEMA: one InputError line naming the field."""
    if nesting_depth(manifest, MAX_DEPTH) > MAX_DEPTH:
        raise InputError(f"{where}: not a valid manifest (lists and objects nested deeper than {MAX_DEPTH})")
    try:
        MANIFEST_SCHEMA(manifest, "")
    except _Invalid as exc:
        raise InputError(f"{where}: not a valid manifest: {exc}") from None
    seen: set[str] = set()
    for entry in manifest.get("shards", []):
        if entry["name"] in seen:
            raise InputError(f"{where}: not a valid manifest: shard {entry['name']!r} is listed twice")
        seen.add(entry["name"])
