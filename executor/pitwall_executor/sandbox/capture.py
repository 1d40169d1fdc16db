"""Bounded capture of a sandbox's stdout and stderr.

Both pipes are drained to EOF, always, so a chatty strategy can never block on a full
pipe; only the first ``limit`` bytes of stdout are kept (the result channel: a cut
result is useless, and the decoder rejects it), and the head and tail of stderr (the
log: the traceback is at the end).

The log is where a strategy's text enters the trusted side: it is read back as printable
UTF-8 (escape sequences and control characters removed, :mod:`pitwall.text`), so the job
``reason`` taken from it, the stored ``log.txt`` and every view of them are safe to print.
"""

from __future__ import annotations

import os
import threading
import time
from typing import IO

from pitwall.text import printable_log

_CHUNK = 64 * 1024


class HeadBuffer:
    """Keeps the first ``limit`` bytes written to it and counts the rest."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        room = self._limit - len(self._data)
        if room > 0:
            self._data += chunk[:room]
        self.total += len(chunk)

    @property
    def truncated(self) -> bool:
        return self.total > len(self._data)

    def getvalue(self) -> bytes:
        return bytes(self._data)


class HeadTailBuffer:
    """Keeps the first and the last ``limit // 2`` bytes of a log, with a marker where bytes
    were cut; :meth:`getvalue` answers them as printable UTF-8."""

    def __init__(self, limit: int) -> None:
        self._head_limit = limit - limit // 2
        self._tail_limit = limit // 2
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self._tail_limit:
            self._tail += chunk
            # Trim lazily so a flood costs O(bytes), not O(bytes * chunks).
            if len(self._tail) > 2 * self._tail_limit + _CHUNK:
                del self._tail[: len(self._tail) - self._tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > len(self._head) + min(len(self._tail), self._tail_limit)

    def getvalue(self) -> bytes:
        tail = bytes(self._tail[max(0, len(self._tail) - self._tail_limit) :])
        if not self.truncated:
            return printable_log(bytes(self._head) + bytes(self._tail))
        # Cut at line ends, and clean each side on its own: an escape sequence split by
        # the cut must not swallow the marker, nor leave its payload as plain text.
        head = bytes(self._head)
        if (end := head.rfind(b"\n")) >= 0:
            head = head[: end + 1]
        if 0 <= (start := tail.find(b"\n")) < len(tail) - 1:  # keep a lone last line whole
            tail = tail[start + 1 :]
        skipped = self.total - len(head) - len(tail)
        return (printable_log(head) + f"\n[... {skipped} bytes cut ...]\n".encode()
                + printable_log(tail))


class StreamReader(threading.Thread):
    """Drains one pipe into a buffer on its own thread; records when the first byte came."""

    def __init__(self, stream: IO[bytes], sink: HeadBuffer | HeadTailBuffer) -> None:
        super().__init__(daemon=True, name="sandbox-capture")
        self._fd = stream.fileno()
        self._stream = stream
        self.sink = sink
        self.first_byte_at: float | None = None

    def run(self) -> None:
        try:
            while chunk := os.read(self._fd, _CHUNK):
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                self.sink.feed(chunk)
        except OSError:
            pass
        finally:
            self._stream.close()
