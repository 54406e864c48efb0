"""User-facing errors: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import errno
import functools
import os
import sys

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
