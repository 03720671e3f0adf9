"""The capture format of `../shared/captures` (cryptofeed's sample_data), read and written.

    URL <-> TIME            the connection was opened (first line)
    URL <- TIME: MESSAGE    a message the client sent
    TIME: MESSAGE           a message received (TIME: local receive time, Unix seconds)

Reading also accepts plain JSON lines (one raw message per line, no time). Sent messages and
connection lines are metadata: `read_capture` yields only received messages.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from db.errors import InputError


@dataclass(frozen=True, slots=True)
class Received:
    line: int
    time: float | None
    raw: str


def _time_prefix(head: str) -> float | None:
    if not head or not (head[0].isdigit()) or len(head) > 32:
        return None
    try:
        return float(head)
    except ValueError:
        return None


def parse_lines(lines: Iterable[str], name: str = "<capture>") -> Iterator[Received]:
    """Received messages of a capture (or JSON-lines) text; metadata lines are skipped."""
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        first = line.lstrip()[:1]
        if first in ("{", "["):
            yield Received(n, None, line.strip())
            continue
        head, sep, rest = line.partition(": ")
        if " <-> " in head or " <- " in head:
            continue  # connection opened / client sent
        t = _time_prefix(head)
        if sep and t is not None:
            yield Received(n, t, rest)
            continue
        if " <-> " in line:
            continue  # "URL <-> TIME" has no ": " when the URL has no port
        raise InputError(f"{name}:{n}: not a capture line (expected 'TIME: MESSAGE' or a JSON message)")


def read_capture(path: Path) -> Iterator[Received]:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            yield from parse_lines(fh, str(path))
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None


class CaptureWriter:
    """Appends a connection's traffic in the capture format, one message per line."""

    def __init__(self, out: TextIO, url: str) -> None:
        self._out = out
        self._url = url
        out.write(f"{url} <-> {time.time()}\n")

    def sent(self, message: str, at: float | None = None) -> None:
        self._out.write(f"{self._url} <- {at if at is not None else time.time()}: {_one_line(message)}\n")

    def received(self, message: str | bytes, at: float | None = None) -> None:
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        self._out.write(f"{at if at is not None else time.time()}: {_one_line(text)}\n")

    def reconnected(self) -> None:
        self._out.write(f"{self._url} <-> {time.time()}\n")

    def flush(self) -> None:
        self._out.flush()


def _one_line(text: str) -> str:
    # JSON allows newlines only between tokens, where a space means the same
    return text.replace("\r", " ").replace("\n", " ")
