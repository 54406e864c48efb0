"""User-facing errors: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import functools
import sys

# Exit status for bad input (a missing root, a wrong layout, a corrupt file, a mismatched checkpoint or store).
EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad input from the user; the message is the one line the CLI prints."""


def one_line_errors(main):
    """Wrap a CLI entry point so that an InputError prints `error: <message>` and exits with EXIT_BAD_INPUT."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except InputError as exc:
            message = " ".join(str(exc).split())  # one line, whatever the message held
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    return wrapped
