"""Prometheus metrics of the API: requests by route and status, latency, jobs by status.

A few dozen lines of text format rather than a dependency: the API has one process
and three metric families. With an ``s3://`` lake the worker cache's counters follow (hit
ratio, bytes saved, evictions, ...): every worker process on the host adds to them in
``<data_dir>/cache/stats.bin`` (``FileCache``), which the API reads at each scrape, so
they are right in split mode as well (API and workers sharing the data dir).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pitwall_executor.datalake.lake_files import LakeFiles

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class ApiMetrics:
    """Counters and histograms updated once per request (from tornado's log_function)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], _Histogram] = defaultdict(_Histogram)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, method, status)] += 1
            self._latency[(route, method)].observe(seconds)

    def render(self, jobs_by_status: dict[str, int] | None,
               lake: LakeFiles | None = None) -> str:
        """The Prometheus text exposition of everything measured so far.

        ``lake``: the stack's lake; when it reads through the worker cache, the cache's
        counters (shared by all its processes) are appended.
        """
        out = ["# HELP pitwall_http_requests_total API requests by route, method and status.",
               "# TYPE pitwall_http_requests_total counter"]
        with self._lock:
            for (route, method, status), n in sorted(self._requests.items()):
                out.append(f'pitwall_http_requests_total{{route="{route}",method="{method}",'
                           f'status="{status}"}} {n}')
            out += ["# HELP pitwall_http_request_duration_seconds API latency by route.",
                    "# TYPE pitwall_http_request_duration_seconds histogram"]
            for (route, method), hist in sorted(self._latency.items()):
                labels = f'route="{route}",method="{method}"'
                cumulative = 0
                for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    out.append(f'pitwall_http_request_duration_seconds_bucket{{{labels},'
                               f'le="{le}"}} {cumulative}')
                out.append(f"pitwall_http_request_duration_seconds_sum{{{labels}}} {hist.total}")
                out.append(f"pitwall_http_request_duration_seconds_count{{{labels}}} {hist.n}")
        out += ["# HELP pitwall_db_up Whether the metadata database answered this scrape.",
                "# TYPE pitwall_db_up gauge", f"pitwall_db_up {0 if jobs_by_status is None else 1}"]
        if jobs_by_status is not None:
            out += ["# HELP pitwall_jobs Jobs in the metadata store by status.",
                    "# TYPE pitwall_jobs gauge"]
            for name in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
                out.append(f'pitwall_jobs{{status="{name}"}} {jobs_by_status.get(name, 0)}')
        text = "\n".join(out) + "\n"
        if lake is not None and lake.cache is not None:
            text += lake.cache.metrics_text()
        return text
