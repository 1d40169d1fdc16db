"""Strategy-derived text is made printable: no escape sequence or control character survives."""

from __future__ import annotations

import re
import time

import pytest

from pitwall.text import REPLACEMENT, printable_line, printable_log, printable_text

#: Anything a terminal could act on: C0 (but tab, newline), DEL, C1, bidi controls.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
HOSTILE = ("\x1b[2J\x1b]0;pwned\x07\x1b[31mred\x1b[0m \x9b6n \x1bPq#0\x1b\\ \x07\x08\x00 "
           "\u202eevil\u202c \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \x1b7\x7f")


def test_hostile_text_keeps_its_words_and_loses_every_control() -> None:
    out = printable_text(HOSTILE)
    assert CONTROL.search(out) is None, repr(out)
    assert "red" in out and "evil" in out and "link" in out
    assert "pwned" not in out  # the window title sequence is dropped whole
    assert "[2J" not in out and "[31m" not in out  # not half-removed sequences either


@pytest.mark.parametrize(("raw", "clean"), [
    ("plain text, tab\there\nand a newline", "plain text, tab\there\nand a newline"),
    ("\x1b[1;32mok\x1b[0m", "ok"),
    ("a\r\nb\rc", "a\nb\nc"),  # a progress bar's redraws become lines
    ("bell\x07", f"bell{REPLACEMENT}"),
    ("c1 csi \x9b2J", f"c1 csi {REPLACEMENT}2J"),
    ("\x1b]0;unterminated title", "0;unterminated title"),  # ESC ] dropped, text inert
    ("lone \x1b at the end \x1b", f"lone {REPLACEMENT} at the end {REPLACEMENT}"),
    ("\u202eoverride", f"{REPLACEMENT}override"),
])
def test_printable_text(raw: str, clean: str) -> None:
    assert printable_text(raw) == clean


def test_a_line_has_no_line_breaks() -> None:
    assert printable_line("Traceback\n\tline\r\nValueError: \x1b[2Jboom") == \
        "Traceback line ValueError: boom"


def test_a_log_comes_back_as_printable_utf8() -> None:
    raw = b"ok \xff\xfe bytes\n\x1b[2J\x1b]0;pwned\x07cleared?\n" + "caf\u00e9\n".encode()
    out = printable_log(raw).decode("utf-8")  # valid UTF-8 now
    assert CONTROL.search(out) is None
    assert out == f"ok {REPLACEMENT}{REPLACEMENT} bytes\ncleared?\ncaf\u00e9\n"
    clean = b"already clean\n\ttabbed\n"
    assert printable_log(clean) is clean  # nothing to do, nothing copied


def test_unterminated_sequences_cost_a_bounded_scan() -> None:
    # 100k escape starts that never end: each costs a bounded look-ahead, not a rescan.
    hostile = "\x1b]0;" * 100_000 + "x" * 1_000_000
    started = time.perf_counter()
    out = printable_text(hostile)
    assert time.perf_counter() - started < 2.0
    assert "\x1b" not in out and out.endswith("x" * 1000)
