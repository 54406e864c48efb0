"""Stores at a URL, read as streams: `http://`, `https://` or WebDataset's `pipe:COMMAND` (no local copy is made).

A location names a stores folder, with `{}` where the path of a file inside it goes:
- `https://host/stores/` (`{}` appended: `https://host/stores/{}`);
- `https://host/stores/{}?sv=...&sig=...` (a query string kept on every file: a container-wide access token);
- `pipe:aws s3 cp s3://bucket/stores/{} -` (a command that writes the file to stdout, started by WebDataset's
  `gopen` as its own `pipe:` shard URLs are).
`RemotePath` is a location and a path inside it, with the part of pathlib's interface the store code uses.

`RemoteFile` reads one file front to back. HTTP uses the standard library (urllib): WebDataset's http opener runs
`curl -f -s` with 30 fixed retries and no read timeout, so a missing file and a failing server look alike (exit 22),
a stalled connection hangs, and the images would need curl; `pipe:` uses `webdataset.gopen`. A transient failure
(connection refused or reset, a timeout, HTTP 408, 429 or 5xx, a command exiting non-zero) is retried up to
`I2VDA_URL_RETRIES` times (default 5), waiting `I2VDA_URL_BACKOFF_S` (default 1 s) doubled after each try, each
retry announced by one `warning:` line; reading then goes on where it stopped (an HTTP Range request, else the file
is fetched again and the bytes already read are skipped). What stays wrong becomes one InputError naming the URL.
The caller's checks (size, sample count, sha256 against the manifest) see exactly the bytes it was given.
"""

from __future__ import annotations

import http.client
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from webdataset.gopen import gopen

from pipeline import __version__
from pipeline.errors import InputError

HTTP_PREFIXES = ("http://", "https://")
PIPE_PREFIX = "pipe:"
PLACEHOLDER = "{}"
RETRIES_ENV, BACKOFF_ENV, TIMEOUT_ENV = "I2VDA_URL_RETRIES", "I2VDA_URL_BACKOFF_S", "I2VDA_URL_TIMEOUT_S"
DEFAULT_RETRIES = 5  # 1 + 2 + 4 + 8 + 16 = 31 s of waiting before giving up
DEFAULT_BACKOFF_S = 1.0
DEFAULT_TIMEOUT_S = 60.0  # a connection or a read that stalls this long is a transient failure
TRANSIENT_HTTP = (408, 425, 429)  # and every 5xx
NOT_FOUND_STATUS = (126, 127)  # a pipe command that the shell cannot run: retrying cannot help
SKIP_CHUNK_BYTES = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def is_remote(location) -> bool:
    """True for an http(s):// or pipe: location (a RemotePath, or a string)."""
    return isinstance(location, RemotePath) or (
        isinstance(location, str) and location.startswith((*HTTP_PREFIXES, PIPE_PREFIX))
    )


@dataclass(frozen=True)
class RemotePath:
    """A file or folder `relative` inside the stores folder at `template` (which holds one `{}`)."""

    template: str
    relative: str = ""

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(self.template, f"{self.relative}/{name}" if self.relative else str(name))

    @property
    def name(self) -> str:
        return self.relative.rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.template, self.relative.rsplit("/", 1)[0] if "/" in self.relative else "")

    def __str__(self) -> str:
        """The URL (or pipe: command) of this file or folder."""
        return self.template.replace(PLACEHOLDER, self.relative, 1)


def store_location(text: str | os.PathLike) -> Path | RemotePath:
    """The `--shards` folder as a local Path, or a RemotePath for a URL (see the module docstring)."""
    if isinstance(text, RemotePath) or not is_remote(str(text)):
        return text if isinstance(text, RemotePath) else Path(text)
    text = str(text)
    if text.startswith(PIPE_PREFIX):
        if text.count(PLACEHOLDER) != 1:
            raise InputError(
                f"{text}: a pipe: location needs one {{}} where the file's path in the stores folder goes, "
                f"e.g. 'pipe:aws s3 cp s3://bucket/stores/{{}} -'"
            )
        return RemotePath(text)
    if PLACEHOLDER not in text:
        text = text.rstrip("/") + "/" + PLACEHOLDER
    return RemotePath(text)


def retry_policy() -> tuple[int, float, float]:
    """(retries, first backoff in s, timeout in s) from the environment, else the defaults."""
    values = []
    for name, default, kind in (
        (RETRIES_ENV, DEFAULT_RETRIES, int),
        (BACKOFF_ENV, DEFAULT_BACKOFF_S, float),
        (TIMEOUT_ENV, DEFAULT_TIMEOUT_S, float),
    ):
        text = os.environ.get(name)
        try:
            value = default if text is None else kind(text)
        except ValueError:
            value = -1
        if value < 0 or (name == TIMEOUT_ENV and value == 0):
            raise InputError(f"{name}={text}: expected a {'whole ' if kind is int else ''}number >= 0")
        values.append(value)
    return values[0], values[1], values[2]


class _Transient(Exception):
    """A failure worth another try; the message says what happened."""


class NotFound(InputError):
    """The server says the file is not there (HTTP 404 or 410)."""


class RemoteFile:
    """A read-only stream of the file at `url` that survives transient failures (module docstring). `size` is the
    file's size when the server says it (HTTP Content-Length or Content-Range), else None."""

    def __init__(self, url: str):
        self.url = str(url)
        self.retries, self.backoff_s, self.timeout_s = retry_policy()
        self.position, self.size, self._stream, self._ended = 0, None, None, False
        self._with_retries(self._open)

    def __enter__(self) -> RemoteFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, size: int = -1) -> bytes:
        data = self._with_retries(lambda: self._read(size))
        self.position += len(data)
        return data

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception:  # a pipe command's exit status on an early close (SIGPIPE): nothing left to read
                pass

    def _with_retries(self, action):
        for attempt in range(self.retries + 1):
            try:
                return action()
            except _Transient as exc:
                self.close()
                if attempt == self.retries:
                    tries = f"{attempt + 1} tries" if attempt else "1 try"
                    raise InputError(f"{self.url}: {exc}; gave up after {tries}") from None
                wait = self.backoff_s * 2**attempt
                print(
                    f"warning: {self.url}: {exc}; retry {attempt + 1} of {self.retries} in {wait:g} s", file=sys.stderr
                )
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _read(self, size: int) -> bytes:
        if self._ended:
            return b""
        if self._stream is None:
            self._open()
        try:
            data = self._stream.read() if size is None or size < 0 else self._stream.read(size)
            if not data and size != 0 and self.url.startswith(PIPE_PREFIX):
                self._stream.close()  # waits for the command: only a zero exit status makes this the real end
        except (OSError, http.client.HTTPException) as exc:
            raise self._failure(exc) from None
        if not data and size != 0:
            if self.size is not None and self.position < self.size:
                raise _Transient(f"the connection closed after {self.position} of {self.size} bytes")
            self._ended = True
        return data

    def _failure(self, exc: BaseException) -> Exception:
        """What a failed read means: transient, or (a pipe: command the shell cannot run) one InputError."""
        status = getattr(self._stream, "status", None)
        if self.url.startswith(PIPE_PREFIX) and isinstance(status, int):
            if status in NOT_FOUND_STATUS:
                return InputError(f"{self.url}: the command could not be run (exit status {status})")
            return _Transient(f"the command exited with status {status}")
        return _Transient(" ".join(str(exc).split()) or type(exc).__name__)

    def _open(self) -> None:
        if self.url.startswith(PIPE_PREFIX):
            self._stream = gopen(self.url, "rb")
            self._skip(self.position)
        else:
            self._open_http()

    def _skip(self, count: int) -> None:
        """Discard the first `count` bytes of a fresh stream (those the caller already read)."""
        while count > 0:
            try:
                data = self._stream.read(min(count, SKIP_CHUNK_BYTES))
            except (OSError, http.client.HTTPException) as exc:
                raise self._failure(exc) from None
            if not data:
                raise _Transient(f"the file ended at {self.position - count} bytes on a retry, before {self.position}")
            count -= len(data)

    def _open_http(self) -> None:
        headers = {"User-Agent": f"i2vda/{__version__}"}
        if self.position:
            headers["Range"] = f"bytes={self.position}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(self.url, headers=headers), timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in TRANSIENT_HTTP or exc.code >= 500:
                raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
            error = NotFound if exc.code in (404, 410) else InputError
            raise error(f"{self.url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise InputError(f"{self.url}: {exc.reason}") from None
            raise _Transient(" ".join(str(exc.reason).split())) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(" ".join(str(exc).split()) or type(exc).__name__) from None
        self._stream = response
        ranged = _CONTENT_RANGE.match(response.headers.get("Content-Range", "")) if response.status == 206 else None
        if ranged and int(ranged.group(1)) == self.position:
            total = None if ranged.group(2) == "*" else int(ranged.group(2))
        else:  # the whole file again (a server without Range support)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            self._skip(self.position)
        if self.size is not None and total is not None and total != self.size:
            raise InputError(f"{self.url}: the file changed on the server while it was read ({self.size} -> {total})")
        self.size = total if total is not None else self.size


def open_file(path: str | os.PathLike):
    """A binary read stream of a local file or of a URL (RemoteFile)."""
    return RemoteFile(str(path)) if is_remote(str(path)) else open(path, "rb")


def read_remote(path: RemotePath | str, limit_bytes: int) -> bytes:
    """The whole file at a URL, at most `limit_bytes` (a larger one is refused with one line)."""
    with RemoteFile(str(path)) as stream:
        chunks, total = [], 0
        while data := stream.read(min(SKIP_CHUNK_BYTES, limit_bytes + 1 - total)):
            chunks.append(data)
            total += len(data)
            if total > limit_bytes:
                raise InputError(f"{path}: larger than {limit_bytes} bytes; not a store manifest")
    return b"".join(chunks)
