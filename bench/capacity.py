"""Capacity plan by simulation: how many job slots a firm's research day needs.

A discrete-event simulation of the executor's queue over one research day (issue 16,
item 4; results in docs/scale-out.md):

* **Arrivals**: ``--jobs-per-day`` backtests (default: 1,000, 3,000 and 10,000), a
  non-homogeneous Poisson process shaped like a research day (New York hours: a morning
  and an afternoon peak, a thin night), of which ``--sweep-share`` arrive as sweeps of
  ``--sweep-size`` children at once. Interactive jobs are served before sweep children
  (the queue's two lanes, docs/architecture.md).
* **Service time** per job: lognormal with median ``--median-s`` (default 7.7 s: the demo
  job, 10 symbols x 6 months with the lookahead audit, submit -> committed on a warm
  pool, `bench/latency.py`, docs/benchmarks.md) and shape ``--sigma``; the sandbox start
  (a checkpoint restore, ~0.34 s) is inside that figure.
* **Slots**: one job per slot (1 vCPU, 2 GiB: a job's default limits); the printed slot
  count is the smallest static pool whose p95 queue wait is under ``--target-wait-s``
  (60 s), over all jobs (``--lane all``, the issue's criterion) or over interactive jobs
  only (``--lane interactive``: sweeps may wait), found by bisection on the same day.
* **Data**: a job reads ``--mib-per-job`` from S3 on a cache miss (0.71 MiB per symbol-year
  of minute bars fetched by row group, `bench/data_cache.py`; 10 symbol-half-years by
  default) and ``--hit-ratio`` of jobs are served by a node's local cache (an assumption
  until the netns harness measures it; printed with the result).
* **Cost** per 1,000 backtests at ``--vcpu-hour-usd`` (default 0.048 USD, a general
  purpose on-demand vCPU-hour; state your own): a static pool of that many slots for 24 h,
  and the floor of paying only for busy slot-hours (what queue-driven autoscaling tends
  to).

    .venv/bin/python bench/capacity.py [--jobs-per-day 1000,3000,10000] [--median-s 7.7]
                                       [--lane all|interactive] [--seed 7]
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
from dataclasses import dataclass

import numpy as np

DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class Job:
    arrival: float
    service: float
    interactive: bool


def intensity(t_s: np.ndarray) -> np.ndarray:
    """Relative arrival rate over a day (hours in New York time): two research peaks
    (10:30 and 15:00, sd 1.5 h) over a background of 5 % of the mean."""
    h = t_s / 3600.0
    peaks = np.exp(-0.5 * ((h - 10.5) / 1.5) ** 2) + np.exp(-0.5 * ((h - 15.0) / 1.5) ** 2)
    return 0.05 + peaks


def arrivals(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` arrival times over one day, drawn from :func:`intensity` (inverse CDF)."""
    grid = np.linspace(0.0, DAY_S, 24 * 60 + 1)
    cdf = np.concatenate([[0.0], np.cumsum(intensity(grid[1:]))])
    cdf /= cdf[-1]
    return np.sort(np.interp(rng.random(n), cdf, grid))


def day(jobs: int, args: argparse.Namespace, rng: np.random.Generator) -> list[Job]:
    """One research day: interactive jobs one by one, sweeps in bursts of children."""
    n_sweeps = round(jobs * args.sweep_share / args.sweep_size)
    n_interactive = jobs - n_sweeps * args.sweep_size
    mu = math.log(args.median_s)
    out = [Job(float(t), float(rng.lognormal(mu, args.sigma)), True)
           for t in arrivals(n_interactive, rng)]
    for t in arrivals(n_sweeps, rng):
        out += [Job(float(t), float(rng.lognormal(mu, args.sigma)), False)
                for _ in range(args.sweep_size)]
    return sorted(out, key=lambda j: j.arrival)


def simulate(jobs: list[Job], slots: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Queue waits of interactive and of sweep jobs, and the busy slot-seconds, with
    ``slots`` servers; interactive jobs first, then first come first served."""
    free = [0.0] * slots  # when each slot is next free (a heap)
    waiting: list[tuple[int, float, int]] = []  # (lane, arrival, index)
    waits_i: list[float] = []
    waits_s: list[float] = []
    busy = 0.0
    i = 0
    now = 0.0
    while i < len(jobs) or waiting:
        # The next start: when a slot frees, or (nothing waiting) when the next job
        # arrives; every arrival up to then joins the queue before one is chosen.
        now = max(free[0], now if waiting else jobs[i].arrival)
        while i < len(jobs) and jobs[i].arrival <= now:
            heapq.heappush(waiting, (0 if jobs[i].interactive else 1, jobs[i].arrival, i))
            i += 1
        if not waiting:
            continue
        _, arrived, k = heapq.heappop(waiting)
        start = max(heapq.heappop(free), arrived)
        (waits_i if jobs[k].interactive else waits_s).append(start - arrived)
        heapq.heappush(free, start + jobs[k].service)
        busy += jobs[k].service
    return np.asarray(waits_i), np.asarray(waits_s), busy


def p95_wait(jobs: list[Job], slots: int, lane: str) -> float:
    waits_i, waits_s, _ = simulate(jobs, slots)
    return float(np.percentile(waits_i if lane == "interactive" else
                               np.concatenate([waits_i, waits_s]), 95))


def slots_needed(jobs: list[Job], target_s: float, lane: str) -> int:
    """The smallest pool whose p95 wait (of ``lane``) is under ``target_s`` (bisection)."""
    low, high = 1, 2
    while p95_wait(jobs, high, lane) >= target_s:
        low, high = high, high * 2
    while low < high:
        mid = (low + high) // 2
        if p95_wait(jobs, mid, lane) < target_s:
            high = mid
        else:
            low = mid + 1
    return high


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs-per-day", default="1000,3000,10000")
    p.add_argument("--median-s", type=float, default=7.7)
    p.add_argument("--sigma", type=float, default=1.0)
    p.add_argument("--sweep-share", type=float, default=0.5)
    p.add_argument("--sweep-size", type=int, default=50)
    p.add_argument("--target-wait-s", type=float, default=60.0)
    p.add_argument("--lane", choices=("all", "interactive"), default="all")
    p.add_argument("--mib-per-job", type=float, default=0.71 * 10 / 2)
    p.add_argument("--hit-ratio", type=float, default=0.8)
    p.add_argument("--vcpu-hour-usd", type=float, default=0.048)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    print(f"service lognormal median {args.median_s} s sigma {args.sigma}; "
          f"{args.sweep_share:.0%} of jobs in sweeps of {args.sweep_size}; "
          f"target p95 wait ({args.lane}) < {args.target_wait_s:.0f} s; cache hit ratio "
          f"{args.hit_ratio:.0%} (assumed); {args.vcpu_hour_usd} USD per vCPU-hour")
    print(f"{'jobs/day':>9} {'slots':>6} {'p95 wait interactive/sweep':>27} {'util':>6} "
          f"{'S3 GiB/day':>11} {'USD/1k static':>14} {'USD/1k busy':>12}")
    for n in (int(x) for x in args.jobs_per_day.split(",")):
        jobs = day(n, args, np.random.default_rng(args.seed))
        slots = slots_needed(jobs, args.target_wait_s, args.lane)
        waits_i, waits_s, busy = simulate(jobs, slots)
        span = max(DAY_S, max(j.arrival for j in jobs) + 1)
        egress = len(jobs) * (1 - args.hit_ratio) * args.mib_per_job / 1024
        static = slots * 24 * args.vcpu_hour_usd / (len(jobs) / 1000)
        floor = busy / 3600 * args.vcpu_hour_usd / (len(jobs) / 1000)
        print(f"{len(jobs):>9} {slots:>6} {np.percentile(waits_i, 95):14.1f} /"
              f"{np.percentile(waits_s, 95) if waits_s.size else 0:7.1f} s "
              f"{busy / (slots * span):6.1%} {egress:11.2f} {static:14.3f} {floor:12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
