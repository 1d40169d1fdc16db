"""Prometheus metrics of the API (``prometheus_client``): requests by route and status,
latency, jobs by status, and the worker cache's counters.

Requests and latency are counted in this process (one API serves the data dir). Job gauges
are read from the metadata store at each scrape. With an ``s3://`` lake the worker cache's
counters follow (hit ratio, bytes saved, evictions, ...): every worker process on the host
adds to them in prometheus_client's multiprocess files under ``<data_dir>/cache/metrics/``
(``datalake/cache_metrics.py``), which the scrape sums, so they are right in split mode as
well (API and ``pitwall worker`` processes sharing the data dir).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pitwall_executor.datalake.lake_files import LakeFiles

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_STATUSES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


class _ScrapeTime(Collector):
    """What is read at scrape time: the database's job counts, the worker cache."""

    def __init__(self, jobs_by_status: Mapping[str, int] | None,
                 lake: LakeFiles | None) -> None:
        self.jobs_by_status = jobs_by_status
        self.lake = lake

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("pitwall_db_up",
                                "Whether the metadata database answered this scrape.",
                                value=0 if self.jobs_by_status is None else 1)
        if self.jobs_by_status is not None:
            jobs = GaugeMetricFamily("pitwall_jobs", "Jobs in the metadata store by status.",
                                     labels=["status"])
            for name in JOB_STATUSES:
                jobs.add_metric([name], self.jobs_by_status.get(name, 0))
            yield jobs
        if self.lake is not None and self.lake.cache is not None:
            yield from self.lake.cache.metric_families()


class ApiMetrics:
    """Counters and histograms updated once per request (from tornado's log_function)."""

    def __init__(self) -> None:
        # A registry of its own: each API app counts its own requests (and the default
        # registry's process and GC metrics are not this service's to report).
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter("pitwall_http_requests",
                                 "API requests by route, method and status.",
                                 ["route", "method", "status"], registry=self.registry)
        self._latency = Histogram("pitwall_http_request_duration_seconds",
                                  "API latency by route.", ["route", "method"],
                                  buckets=BUCKETS, registry=self.registry)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests.labels(route, method, str(status)).inc()
        self._latency.labels(route, method).observe(seconds)

    def render(self, jobs_by_status: Mapping[str, int] | None,
               lake: LakeFiles | None = None) -> bytes:
        """The Prometheus text exposition of everything measured so far.

        ``jobs_by_status``: None when the database did not answer (``pitwall_db_up`` 0, no
        job gauges). ``lake``: the stack's lake; when it reads through the worker cache, the
        cache's counters (shared by all its processes) are included.
        """
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_ScrapeTime(jobs_by_status, lake))
        return generate_latest(self.registry) + generate_latest(scrape)
