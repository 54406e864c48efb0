"""User-facing errors: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import errno
import functools
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# Exit status for bad input (a missing root, a wrong layout, a corrupt file, a mismatched checkpoint or store).
EXIT_BAD_INPUT = 2
# OpenCV and the FFmpeg inside it print their own "[ERROR:0@0.1] ..." and "[mov,mp4 @ 0x...]" lines on stderr before
# our one line says what failed; the commands turn them off unless the user set these variables (-8: AV_LOG_QUIET).
QUIET_NATIVE_LOGS = {"OPENCV_LOG_LEVEL": "OFF", "OPENCV_FFMPEG_LOGLEVEL": "-8"}


class InputError(Exception):
    """Bad input from the user; the message is the one line the CLI prints."""


def os_error_line(exc: OSError) -> str:
    """One line for an error of the environment (a full disk, a read-only folder, a file where a folder should be):
    `<path>: <cause> (<ERRNO NAME>)`, e.g. `stores/viper: No space left on device (ENOSPC)`."""
    where = exc.filename if exc.filename is not None else "i2vda"
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    cause = exc.strerror or (str(exc.args[0]) if exc.args else type(exc).__name__)
    name = errno.errorcode.get(exc.errno) if isinstance(exc.errno, int) else None
    return f"{where}: {cause}" + (f" ({name})" if name else "")


def quiet_native_logs() -> None:
    """Silence OpenCV's and FFmpeg's own stderr lines (QUIET_NATIVE_LOGS), where the user did not set them: through
    the environment for a later import and for FFmpeg (read when it first opens a video), and through OpenCV's logger
    when it is loaded already."""
    for name, value in QUIET_NATIVE_LOGS.items():
        os.environ.setdefault(name, value)
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and os.environ["OPENCV_LOG_LEVEL"] == QUIET_NATIVE_LOGS["OPENCV_LOG_LEVEL"]:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


_scratch: dict[int, int] = {}  # pid -> the descriptor of this process's scratch file for native stderr


@contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Hold what native code writes to file descriptor 2 inside the block (libpng prints `libpng error: ...` itself
    before it returns a failure to OpenCV) and yield the list that receives those lines when the block ends: the
    caller folds them into its one line, or echoes them when the call succeeded. The swap is process-wide: for code
    that decodes in one thread per process (the training process, a DataLoader worker, i2vda-eval)."""
    scratch = _scratch.get(os.getpid())
    if scratch is None:  # one scratch file per process, unlinked from the start
        with tempfile.TemporaryFile() as handle:
            scratch = _scratch[os.getpid()] = os.dup(handle.fileno())
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(scratch, 2)
    try:
        yield lines
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        size = os.fstat(scratch).st_size
        if size:
            lines += os.pread(scratch, size, 0).decode(errors="replace").splitlines()
            os.ftruncate(scratch, 0)
            os.lseek(scratch, 0, os.SEEK_SET)


def echo_native(lines: list[str]) -> None:
    """Write on stderr what `native_stderr` held back from a call that succeeded (a decoder's warnings)."""
    if lines:
        print("\n".join(lines), file=sys.stderr)


def one_line_errors(main):
    """Wrap a CLI entry point so that an InputError prints `error: <message>`, and an OSError of the environment
    `error: <path>: <cause> (<ERRNO>)`, and exits with EXIT_BAD_INPUT; OpenCV's own log lines are off
    (`quiet_native_logs`)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        quiet_native_logs()
        try:
            return main(*args, **kwargs)
        except (InputError, OSError) as exc:
            text = os_error_line(exc) if isinstance(exc, OSError) else str(exc)
            message = " ".join(text.split())  # one line, whatever the message held
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    return wrapped
