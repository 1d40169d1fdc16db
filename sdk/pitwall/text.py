"""Printable text from untrusted output: what a strategy wrote, made safe to show.

A strategy's stderr, the job ``reason`` built from it and any message quoting its output
reach terminals (the CLI), notebooks and log viewers. A terminal escape sequence in them
could clear the researcher's screen, retitle the window or hide the lines around it, and
a bidirectional override could make text read differently from what it is. Everything
that comes out of a sandbox is untrusted input (docs/architecture.md §5), so such text
is cleaned where it enters the trusted side and again where it is shown.

>>> printable_line("boom \\x1b[31mred\\x1b[0m\\x07 done\\nnext")
'boom red\ufffd done next'
"""

from __future__ import annotations

import re

#: What stands in for a control character that was not part of an escape sequence.
REPLACEMENT = "\ufffd"

# Whole escape sequences (colours, cursor moves, window titles) are dropped rather than
# replaced, so a log that used colours stays readable. Bounded so that an unterminated
# sequence costs a short scan, not one to the end of a large log.
_ESCAPE = re.compile(
    r"""
      \x1b\[[0-?]{0,64}[ -/]{0,8}[@-~]             # CSI: colours, cursor, erase
    | \x1b\][^\x07\x1b\n]{0,512}(?:\x07|\x1b\\)    # OSC: window title, hyperlinks
    | \x1b[PX^_][^\x1b\n]{0,512}\x1b\\             # DCS, SOS, PM, APC
    | \x1b[@-Z\\-_]                                # two-byte escapes
    """,
    re.VERBOSE,
)
# C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), the line and
# paragraph separators, and the bidirectional embeddings, overrides and isolates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NEEDS_WORK = re.compile(f"\r|{_CONTROL.pattern}")
_LINE_BREAKS = re.compile("[\t\n]+")


def printable_text(text: str) -> str:
    """``text`` with every control character gone but newline and tab (a multi-line log).

    Escape sequences are dropped whole, a carriage return becomes a newline (a progress
    bar's redraws show as lines), any other control character becomes U+FFFD.

    >>> printable_text("line 1\\r\\nline 2\\rover\\x1b]0;pwned\\x07\\x9b6n")
    'line 1\\nline 2\\nover\ufffd6n'
    """
    if _NEEDS_WORK.search(text) is None:
        return text
    text = _ESCAPE.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(REPLACEMENT, text)


def printable_line(text: str) -> str:
    """``text`` as one printable line: :func:`printable_text` with newlines and tabs as
    single spaces (a job's ``reason``, a status line)."""
    return _LINE_BREAKS.sub(" ", printable_text(text))


def printable_log(data: bytes) -> bytes:
    """A captured log as printable UTF-8 (:func:`printable_text`; bad UTF-8 becomes U+FFFD)."""
    text = data.decode("utf-8", "replace")
    clean = printable_text(text)
    return data if clean is text and text.isascii() else clean.encode()
