"""A strategy floods its log with terminal escapes, bad UTF-8 and control bytes, then raises
with them in its message: the job's reason and log come back as printable text."""

from __future__ import annotations

import re

import pytest

from conftest import Env

pytestmark = pytest.mark.sandbox

CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
FLOOD = r'''
@pitwall.vectorized
def s(bars):
    junk = (b"\x1b[2J\x1b[H\x1b]0;hijacked\x07\x1b]52;c;ZXZpbA==\x07\x1bP+q\x1b\\"
            b"\x9b6n\xc2\x9b6n\xe2\x80\xae\x00\x08\x7f\xff\xfe\x1b]0;unterminated")
    for i in range(2000):  # ~200 kB: the log keeps its head and tail
        os.write(2, b"line %d " % i + junk + b"\r\n")
    raise RuntimeError("boom \x1b[2J\x1b]0;pwned\x07\u202eevil\x9b6n")
'''


def test_escapes_in_the_log_and_the_reason_are_neutralised(env: Env) -> None:
    a = env.run(FLOOD)
    assert a.view.status.value == "FAILED"
    assert "RuntimeError: boom" in a.reason and "evil" in a.reason, a.reason
    assert CONTROL.search(a.reason) is None, repr(a.reason)
    assert "line 0 " in a.log and "line 1999 " in a.log and "bytes cut" in a.log
    assert "Traceback" in a.log
    assert CONTROL.search(a.log) is None, repr(CONTROL.search(a.log))
    # Window titles and clipboard writes are dropped whole (the traceback's source line
    # still quotes the raise, as printable text).
    assert "hijacked" not in a.log and "ZXZpbA" not in a.log
    assert a.leftovers == []
