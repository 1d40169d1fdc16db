"""The prefix channel: the trusted worker feeds a vectorized strategy growing prefixes of
its bars and asks for its weights at chosen times (docs/architecture.md §1.2, §5).

It serves two uses, both point-in-time by construction because a bar reaches the
sandbox only when the worker sends it:

* the lookahead audit: each ``CALL`` is answered on the bars sent so far by a strategy
  loaded anew (its modules re-executed, the scratch dir emptied; or a fresh process),
  in a sandbox that never held the full run's bars, files or process, nor a cut list;
* stepped runs: one process answers every ``CALL`` on the prefix up to the decision time.

Frames use the header of :mod:`pitwall.frames`. Worker → sandbox: ``BARS`` (an Arrow IPC
stream of the rows to append, in time order, never a row after the next ``CALL``'s
time), ``CALL`` (empty: run the strategy on everything sent so far), ``END``. Sandbox →
worker: one ``RESULT`` (Arrow IPC stream of weights) or ``ERROR`` frame per ``CALL``.
"""

from __future__ import annotations

#: Worker → sandbox frame kinds (the sandbox answers with pitwall.frames RESULT / ERROR).
BARS, CALL, END = 32, 33, 34
#: Modes of the in-sandbox server, named in the job's spec.json: the audit with the
#: strategy's modules loaded anew for every call (``audit``) or a fresh forked process per
#: call (``audit_fork``, dearer under gVisor), and stepped runs.
AUDIT, AUDIT_FORK, STEPPED = "audit", "audit_fork", "stepped"
