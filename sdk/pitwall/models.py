"""Wire models shared by the SDK, the executor and the server extension (docs/architecture.md §4).

One source of truth: the API validates with these, the worker reads them, and the
TypeScript types of the labextension are generated from their JSON Schema.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pitwall.text import printable_line, printable_text

JsonScalar = str | int | float | bool | None
ParamValue = JsonScalar | list[JsonScalar]

#: The dates a spec may name: wider than any market history, and narrow enough that a
#: date, the day after it and its UTC datetimes are valid everywhere downstream.
FIRST_DATE = dt.date(1900, 1, 1)
LAST_DATE = dt.date(2200, 12, 31)


def finite(what: str, example: str) -> BeforeValidator:
    """Refuse NaN and infinity with a sentence naming the field, what it holds and an example.

    Without it a NaN fails a bound instead ("should be less than or equal to 1e15"),
    which tells the researcher nothing about what went wrong.
    """

    def check(value: object, info: ValidationInfo) -> object:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return value  # not a number at all: pydantic says so
        if isinstance(number, float) and not math.isfinite(number):
            raise PydanticCustomError(
                "finite_number", "{field} must be a finite {what}, e.g. {example}",
                {"field": info.field_name, "what": what, "example": example})
        return value

    return BeforeValidator(check)


def _printable_line(value: str | None) -> str | None:
    return None if value is None else printable_line(value)


def _printable_text(value: str | None) -> str | None:
    return None if value is None else printable_text(value)


def _printable_data(value: Any) -> Any:
    """Every string of a JSON-like value made printable (an event's payload quotes reasons)."""
    if isinstance(value, str):
        return printable_text(value)
    if isinstance(value, dict):
        return {printable_text(str(k)): _printable_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable_data(v) for v in value]
    return value


#: Text that may quote what a strategy wrote: shown as one printable line.
PrintableLine = Annotated[str | None, AfterValidator(_printable_line)]



_EVERY_MINUTES = re.compile(r"^(\d{1,3})min$")
_AT_TIMES = re.compile(r"^at:([01]?\d|2[0-3]):[0-5]\d(,([01]?\d|2[0-3]):[0-5]\d)*$")


def check_schedule(schedule: str) -> str:
    """``schedule`` if it names decision times a stepped run understands, else a ValueError
    that lists the forms: ``bar``, ``daily``, ``<N>min`` (1-390), ``at:HH:MM[,HH:MM...]``."""
    if schedule in ("bar", "daily") or _AT_TIMES.match(schedule):
        return schedule
    match = _EVERY_MINUTES.match(schedule)
    if match and 1 <= int(match.group(1)) <= 390:
        return schedule
    raise ValueError(f"stepped schedule {schedule!r} is not one of 'bar', 'daily', "
                     "'<N>min' (1-390) or 'at:HH:MM[,HH:MM...]' (New York time)")

class JobStatus(StrEnum):
    """Lifecycle of a job: ``PENDING → RUNNING → COMPLETED | FAILED | CANCELLED | TIMED_OUT``."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING)


class EngineKind(StrEnum):
    """How the strategy decides: a whole frame at once, or bar by bar."""

    VECTORIZED = "vectorized"
    EVENT = "event"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Costs(_Model):
    """Trading costs applied by the trusted engine to every traded notional."""

    commission_bps: Annotated[float, Field(ge=0, le=1000),
                              finite("number of basis points", "1.5")] = 0.0
    slippage_bps: Annotated[float, Field(ge=0, le=1000),
                            finite("number of basis points", "2")] = 0.0
    # Currency per share traded (qty = notional / fill price).
    commission_per_share: Annotated[float, Field(ge=0, le=100),
                                    finite("number of dollars per share", "0.005")] = 0.0
    # "fixed": pay half of ``spread_bps``; "range": pay half the fill bar's high − low.
    spread_model: Literal["fixed", "range"] = "fixed"
    spread_bps: Annotated[float, Field(ge=0, le=1000), finite("number of basis points", "5")] = 0.0
    # Annual rate on short notional, accrued over the time a short is held (ACT/365).
    borrow_bps: Annotated[float, Field(ge=0, le=100_000),
                          finite("number of basis points a year", "50")] = 0.0
    # Y of the square-root impact law: a fill of q shares pays Y·σ·√(q/volume) of its
    # notional, σ the fill bar's Parkinson volatility (docs/engine-conventions.md §2.3).
    impact_coefficient: Annotated[float, Field(ge=0, le=100),
                                  finite("number (of order 1)", "1.0")] = 0.0


class Execution(_Model):
    """How the trusted engine executes targets: leverage limits and a rebalance threshold.

    ``max_gross`` bounds ``Σ|w|`` and ``max_net`` bounds ``|Σw|`` of the targets at every
    bar; ``leverage_policy`` says whether an excess is scaled down ("clip") or fails the
    run ("refuse"). A symbol whose drifted weight is within ``rebalance_threshold`` of its
    target is not traded. ``participation``, ``lot_size`` and ``min_trade_notional`` are
    the fill model (with ``Costs.impact_coefficient``); a spec's ``costs_preset`` sets
    them all at once.
    """

    max_gross: Annotated[float, Field(gt=0, le=1000),
                         finite("multiple of capital", "2")] | None = None
    max_net: Annotated[float, Field(gt=0, le=1000),
                       finite("multiple of capital", "1")] | None = None
    leverage_policy: Literal["clip", "refuse"] = "clip"
    rebalance_threshold: Annotated[float, Field(ge=0, le=10), finite("weight", "0.01")] = 0.0
    # The fill model (docs/engine-conventions.md §2.3): at most ``participation`` of a
    # bar's volume per symbol (the rest carries to later bars), sizes rounded down to
    # ``lot_size`` shares, no fill worth less than ``min_trade_notional`` (currency).
    participation: Annotated[float, Field(gt=0, le=1),
                             finite("fraction of a bar's volume", "0.1")] | None = None
    lot_size: Annotated[float, Field(gt=0, le=1e6), finite("number of shares", "1")] | None = None
    min_trade_notional: Annotated[float, Field(ge=0, le=1e12),
                                  finite("number of dollars", "100")] = 0.0


#: Named costs and fill rules (docs/engine-conventions.md §2.3). A spec's ``costs_preset``
#: fills every field of ``costs`` and ``execution`` that the spec does not set itself.
COSTS_PRESETS: dict[str, tuple[dict[str, float], dict[str, float]]] = {
    "frictionless": ({}, {}),
    "retail": ({"spread_bps": 5.0, "impact_coefficient": 1.0},
               {"participation": 0.1, "lot_size": 1.0, "min_trade_notional": 10.0,
                "rebalance_threshold": 0.01}),
    "institutional": ({"commission_bps": 1.0, "spread_bps": 2.0, "impact_coefficient": 1.0},
                      {"participation": 0.05, "lot_size": 1.0, "min_trade_notional": 1000.0,
                       "rebalance_threshold": 0.005}),
}
CostsPreset = Literal["frictionless", "retail", "institutional"]
#: The preset of a spec that names none when it is parsed: a stored spec written before
#: specs named their preset reads back as the zero-cost run it was. A submission never
#: leaves a spec without one: the deployment's default is applied and stored
#: (:func:`resolve_costs_preset`, docs/engine-conventions.md §2.3).
DEFAULT_COSTS_PRESET: CostsPreset = "frictionless"


def _preset_fields(preset: dict[str, float], data: dict[str, Any], key: str) -> object:
    """``data[key]`` (a dict or a model) over the preset's values; anything else as given."""
    if key not in data:
        return dict(preset)
    given = data[key]
    if isinstance(given, BaseModel):
        return {**preset, **given.model_dump(exclude_unset=True)}
    if isinstance(given, dict):
        return {**preset, **given}
    return given  # pydantic reports what is wrong with it


class Limits(_Model):
    """Resource limits of the sandbox that runs the strategy."""

    timeout_s: Annotated[float, Field(gt=0, le=24 * 3600),
                         finite("number of seconds", "600")] = 600.0
    memory_mb: Annotated[int, Field(ge=64, le=64 * 1024)] = 2048
    pids: Annotated[int, Field(ge=8, le=4096)] = 128
    cpus: Annotated[float, Field(gt=0, le=64), finite("number of CPUs", "2")] = 1.0
    scratch_mb: Annotated[int, Field(ge=1, le=16 * 1024)] = 256
    output_mb: Annotated[int, Field(ge=1, le=4096)] = 256
    log_kb: Annotated[int, Field(ge=1, le=64 * 1024)] = 1024


class BacktestSpec(_Model):
    """What to run: the data slice, the engine, capital, costs, parameters and limits."""

    dataset: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
    version: Annotated[int, Field(ge=0)] | None = None
    universe: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=32)]],
        Field(min_length=1, max_length=10_000),
    ]
    start: dt.date
    end: dt.date
    bar_size: str = "1min"
    engine: EngineKind = EngineKind.VECTORIZED
    capital: Annotated[float, Field(gt=0, le=1e15),
                       finite("number of dollars", "1000000")] = 1_000_000.0
    costs: Costs = Costs()
    execution: Execution = Execution()
    # Symbol of the dataset whose buy-and-hold is the benchmark for beta, alpha and the
    # tear sheet: one of the universe, or any other (an index series imported as a symbol),
    # whose bars the trusted engine reads and the strategy never sees.
    benchmark: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    # A universe named by a rule evaluated point in time over the listed ``universe`` (the
    # candidates), e.g. "dollar_volume_20d > 1e6 and price >= 5 at month_start"
    # (pitwall.universe; docs/reference-data.md): the bars carry ``member``, and the
    # engine holds nothing in a symbol while it is not a member.
    universe_rule: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    # Annual risk-free rate; the metrics use risk_free / 252 per day.
    risk_free: Annotated[float, Field(ge=-1, le=1), finite("annual rate", "0.04 (4%)")] = 0.0
    params: dict[str, ParamValue] = Field(default_factory=dict)
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    limits: Limits = Limits()
    # Re-run a vectorized strategy on truncated data and compare (lookahead audit):
    # "default" keeps its cost near the main run's, "thorough" is for final runs.
    audit: bool = True
    audit_level: Literal["default", "thorough"] = "default"
    # A stepped run: call a vectorized strategy on the prefix of bars up to each decision
    # time ("bar", "daily", "<N>min", "at:HH:MM[,HH:MM]" New York time) and keep only the
    # weights of that time; point-in-time by construction (docs/lookahead-audit.md).
    stepped: Annotated[str, Field(max_length=200)] | None = None
    # The content digest of the data the first run read (set when the job is submitted):
    # a rerun on a data dir whose dataset@version holds other bytes is refused.
    data_digest: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")] | None = None
    # The named costs and fill rules the costs and execution fields default to
    # (COSTS_PRESETS); the fields a spec sets override the preset's. A spec submitted
    # without one gets the deployment's default, stored here (resolve_costs_preset).
    costs_preset: CostsPreset = DEFAULT_COSTS_PRESET
    # The deployment's default preset when the job was submitted (executor config
    # ``default_costs_preset``), recorded by the submission so the report can say whether
    # ``costs_preset`` is that default. None (and left out of the JSON, so a spec stored
    # before it existed dumps as it did) in such a spec and in a spec not yet submitted.
    default_costs_preset: CostsPreset | None = Field(default=None,
                                                     exclude_if=lambda value: value is None)

    @model_validator(mode="before")
    @classmethod
    def _apply_costs_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = COSTS_PRESETS.get(data.get("costs_preset", DEFAULT_COSTS_PRESET))
        if preset is None:
            return data  # not a preset name: the field's Literal says so
        return {**data, "costs": _preset_fields(preset[0], data, "costs"),
                "execution": _preset_fields(preset[1], data, "execution")}

    @field_validator("start", "end")
    @classmethod
    def _supported_date(cls, value: dt.date, info: ValidationInfo) -> dt.date:
        if not FIRST_DATE <= value <= LAST_DATE:
            raise PydanticCustomError(
                "date_range", "{field} {value} is outside the dates Pitwall supports, {first} "
                "to {last}; pick a date inside the dataset's history",
                {"field": info.field_name, "value": value.isoformat(),
                 "first": FIRST_DATE.isoformat(), "last": LAST_DATE.isoformat()})
        return value

    @field_validator("universe_rule")
    @classmethod
    def _parsed_rule(cls, rule: str | None) -> str | None:
        if rule is not None:
            from pitwall.universe import UniverseRule  # polars-heavy: only when used

            UniverseRule.parse(rule)  # a ValueError says what to write
        return rule

    @field_validator("params")
    @classmethod
    def _finite_params(cls, params: dict[str, ParamValue]) -> dict[str, ParamValue]:
        # JSON has no NaN or infinity: such a value would reach the strategy as null.
        for name, value in params.items():
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise PydanticCustomError(
                    "finite_number", "parameter '{name}' must hold finite numbers, e.g. 0.5; "
                    "NaN and infinity cannot be sent", {"name": name})
        return params

    @model_validator(mode="after")
    def _check(self) -> BacktestSpec:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}; swap them")
        if len(set(self.universe)) != len(self.universe):
            raise ValueError("universe lists a symbol twice; list each symbol once")
        if self.bar_size != "1min":
            raise ValueError(f"bar_size {self.bar_size!r} is not available; use '1min'")
        if self.stepped is not None:
            if self.engine is not EngineKind.VECTORIZED:
                raise ValueError("stepped runs are for vectorized strategies; an event-driven "
                                 "strategy already decides bar by bar")
            check_schedule(self.stepped)
        return self

    def submission_json(self) -> bytes:
        """The spec as a client sends it to the Backtest API: only the fields it was given
        (``exclude_unset``, nested models too), so the deployment can tell a spec that
        names no costs preset, and which cost fields it sets, from one that asks for the
        zero-cost defaults (:func:`resolve_costs_preset`)."""
        return self.model_dump_json(exclude_unset=True).encode()


def resolve_costs_preset(spec: BacktestSpec, default: CostsPreset) -> BacktestSpec:
    """``spec`` as a deployment whose default preset is ``default`` stores a new job
    (docs/engine-conventions.md §2.3).

    A spec that does not set ``costs_preset`` gets ``default``: its fields fill what
    ``spec.costs`` and ``spec.execution`` do not set themselves (``model_fields_set``),
    and the preset's name is stored, so a rerun reads the same numbers whatever the
    deployment's default is by then. A spec that names a preset keeps it and its values.
    Either way ``default_costs_preset`` records ``default``. A stored job's spec is not
    passed here again (a rerun submits it as it is).
    """
    recorded = {"default_costs_preset": default}
    if "costs_preset" in spec.model_fields_set:
        return spec.model_copy(update=recorded)
    return BacktestSpec.model_validate({
        **spec.model_dump(), "costs": spec.costs.model_dump(exclude_unset=True),
        "execution": spec.execution.model_dump(exclude_unset=True),
        "costs_preset": default, **recorded})


class AuditFinding(_Model):
    """Where a truncated re-run of the strategy first disagreed with the full run.

    ``full`` and ``truncated`` are the effective target weights of ``symbol`` at ``ts``
    (forward-filled as the engine reads them); ``n_differences`` counts the differing
    ``(ts, symbol)`` bars up to ``cut``.
    """

    cut: dt.datetime
    ts: dt.datetime
    symbol: str
    full: float
    truncated: float
    n_differences: int


class DetectionPower(_Model):
    """How likely the audit's random cuts were to miss a leak on ``fraction`` of the bars."""

    fraction: float
    miss_probability: float


class LookaheadAudit(_Model):
    """Verdict of the lookahead audit of a vectorized run (docs/lookahead-audit.md).

    ``status``: ``no_lookahead_found`` (every checked cut agreed; ``statement`` says what
    that covers and with which power), ``flagged`` (``first`` is the earliest
    disagreement), ``not_run`` (no cut could be checked; ``notes`` say why), or ``exact``
    (a stepped run: point-in-time by construction, nothing to audit), or ``pending`` (the
    metrics are shown while the audit still runs; the job's terminal state carries the
    verdict).
    ``coverage`` counts the checked cuts per family (``session_end``, ``session_start``,
    ``week_end``, ``month_end``, ``before_gap``, ``random``).
    """

    status: Literal["no_lookahead_found", "flagged", "not_run", "exact", "pending"]
    tolerance: float
    cuts_checked: list[dt.datetime] = Field(default_factory=list)
    first: AuditFinding | None = None
    notes: list[str] = Field(default_factory=list)
    level: Literal["default", "thorough"] = "default"
    coverage: dict[str, int] = Field(default_factory=dict)
    power: list[DetectionPower] = Field(default_factory=list)
    #: The smallest leak fraction found with probability >= 99% by the random cuts.
    detectable_fraction: float | None = None
    #: Each re-run was a fresh process that saw only the bars up to its cut.
    independent: bool = True
    statement: str = ""

    @field_validator("status", mode="before")
    @classmethod
    def _renamed(cls, value: object) -> object:
        # Jobs recorded before the verdict said what it covered said "passed".
        return "no_lookahead_found" if value == "passed" else value


class Metrics(_Model):
    """Performance figures of the trusted engine (conventions: docs/engine-conventions.md)."""

    lookahead: LookaheadAudit | None = None  # filled in by the worker's audit step
    total_return: float
    cagr: float
    annual_volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    turnover: float
    exposure: float
    n_days: int
    n_bars: int
    final_equity: float
    calmar: float = 0.0
    max_drawdown_days: int = 0
    win_rate: float = 0.0
    # None: gains and no losing day, a ratio of +inf (JSON has no infinity).
    profit_factor: float | None = 0.0
    n_trades: int = 0
    # Against the spec's benchmark; None when the run has none (not a measured 0).
    beta: float | None = None
    alpha: float | None = None
    # Bars whose targets exceeded max_gross/max_net and were scaled down ("clip" policy).
    leverage_clipped_bars: int = 0


class JobView(_Model):
    """A job as the API and the CLI show it."""

    id: str
    status: JobStatus
    spec: BacktestSpec
    researcher: str
    attempt: int
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    # Often the last line a strategy wrote to stderr: shown only as printable text.
    reason: PrintableLine = None
    progress: float = 0.0
    metrics: Metrics | None = None
    bundle_sha256: str
    data_version: int | None = None
    # "sweep": a parent whose status and progress aggregate its children (never run itself).
    kind: Literal["backtest", "sweep"] = "backtest"
    parent_id: str | None = None  # the sweep this job is a child of


#: Most equity points one progress event carries.
MAX_EQUITY_POINTS = 500


class ProgressEvent(_Model):
    """One event of a job's stream: a status change, progress, or a log line."""

    job_id: str
    seq: int
    kind: str
    at: dt.datetime
    status: JobStatus | None = None
    progress: float | None = None
    message: Annotated[str | None, AfterValidator(_printable_text)] = None
    data: Annotated[dict[str, Any] | None, AfterValidator(_printable_data)] = None
    #: A progress event's new points of the running equity curve since the job's previous
    #: event, as ``[ts_ms, equity]`` (ms since the epoch, UTC): marked by the trusted broker
    #: while an event-driven job runs; one downsampled curve once a vectorized job is
    #: accounted. The completed job's equity artifact supersedes them.
    equity: Annotated[list[tuple[int, Annotated[float, Field(allow_inf_nan=False)]]] | None,
                      Field(max_length=MAX_EQUITY_POINTS)] = None


# -- The tear sheet (``tearsheet.json``, docs/engine-conventions.md §4) ------------------

#: A finite number (JSON has no NaN or infinity); None where a figure is undefined.
Finite = Annotated[float, Field(allow_inf_nan=False)]


class ReturnStats(_Model):
    """Daily-return statistics of one series (the strategy's, or its benchmark's).

    ``max_drawdown`` is of the daily closes here (the bar-level one is ``Metrics``');
    ``value_at_risk`` and ``conditional_value_at_risk`` are historical, one day, at
    ``TearSheet.var_cutoff`` (empyrical's conventions); ``kurtosis`` is the excess one.
    """

    total_return: Finite
    cagr: Finite
    annual_volatility: Finite
    sharpe: Finite
    sortino: Finite
    max_drawdown: Finite
    best_day: Finite | None = None
    worst_day: Finite | None = None
    value_at_risk: Finite | None = None
    conditional_value_at_risk: Finite | None = None
    skew: Finite | None = None
    kurtosis: Finite | None = None


class RelativeStats(_Model):
    """The strategy against its benchmark, on daily returns (annualised with 252 days)."""

    benchmark: str
    beta: Finite
    alpha: Finite
    correlation: Finite | None = None
    tracking_error: Finite
    information_ratio: Finite | None = None
    active_return: Finite


class DrawdownPeriod(_Model):
    """One of the deepest drawdowns of the daily closes (pyfolio's ``gen_drawdown_table``).

    ``depth`` is negative (valley / peak − 1); ``duration_days`` counts business days from
    the peak to the recovery, both included (None while not recovered);
    ``days_underwater`` counts the trading days that closed below the peak.
    """

    peak: dt.date
    valley: dt.date
    recovery: dt.date | None = None
    depth: Finite
    duration_days: int | None = None
    days_underwater: int


class PeriodReturn(_Model):
    """The compounded return of a calendar year (``month`` None) or month."""

    year: int
    month: int | None = None
    ret: Finite


class DayReturn(_Model):
    day: dt.date
    ret: Finite


class Histogram(_Model):
    """Daily returns counted in equal bins: ``len(edges) == len(counts) + 1``."""

    edges: list[Finite] = Field(default_factory=list)
    counts: list[int] = Field(default_factory=list)


class RoundTrip(_Model):
    """A position from flat (or a flip) back to flat (or a flip), fills matched FIFO.

    ``pnl`` is the realised P&L before costs (marked at the last close while ``closed``
    is None), ``net_pnl`` after the trade costs of its fills; ``ret`` is ``net_pnl`` over
    the notional that opened or added to the position.
    """

    symbol: str
    direction: Literal["long", "short"]
    opened: dt.datetime
    closed: dt.datetime | None = None
    n_fills: int
    max_qty: Finite
    entry_price: Finite
    exit_price: Finite | None = None
    pnl: Finite
    cost: Finite
    net_pnl: Finite
    ret: Finite | None = None


class RoundTripSummary(_Model):
    """Round trips in aggregate; win rate, averages and extremes over the closed ones."""

    n: int = 0
    n_closed: int = 0
    n_long: int = 0
    n_short: int = 0
    win_rate: Finite | None = None
    avg_net_pnl: Finite | None = None
    avg_win: Finite | None = None
    avg_loss: Finite | None = None
    best: Finite | None = None
    worst: Finite | None = None
    profit_factor: Finite | None = None
    avg_hours: Finite | None = None
    net_pnl: Finite = 0.0


class SymbolAttribution(_Model):
    """One symbol's share of the P&L: ``net_pnl = pnl − cost`` (borrow is not attributed)."""

    symbol: str
    pnl: Finite
    cost: Finite
    net_pnl: Finite
    traded_notional: Finite
    n_fills: int


class CostBreakdown(_Model):
    """What the run paid, by kind, in currency.

    ``source`` says where each figure comes from: ``"engine"`` (charged per fill by the
    engine), ``"rates"`` (the spec's rates times the fills' notional and shares) or
    ``"identity"`` (borrow: the P&L of the symbols less the trade costs less the run's
    P&L). ``impact`` is the rest of the trade costs (the fill model's market impact).
    """

    commission: Finite | None = None
    slippage: Finite | None = None
    spread: Finite | None = None
    impact: Finite | None = None
    borrow: Finite | None = None
    trade_costs: Finite
    traded_notional: Finite
    source: dict[str, str] = Field(default_factory=dict)


class TearSheetHeader(_Model):
    """Which run this is: strategy, parameters, universe, period, benchmark."""

    strategy: str | None = None
    bundle_sha256: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    universe: list[str] = Field(default_factory=list)  # the first MAX_UNIVERSE_SHOWN
    n_symbols: int = 0
    start: dt.date | None = None  # asked
    end: dt.date | None = None
    first_day: dt.date | None = None  # of the bars
    last_day: dt.date | None = None
    n_days: int = 0
    benchmark: str
    capital: Finite
    dataset: str | None = None
    version: int | None = None
    #: A universe rule's text and how its universe moved in the run (manifest ``universe``).
    universe_rule: str | None = None
    universe_evaluations: int = 0
    universe_entered: int = 0
    universe_left: int = 0
    #: The spec's costs preset (``COSTS_PRESETS``), and the deployment's default when the
    #: job was submitted (the spec's ``default_costs_preset``; None when not recorded).
    costs_preset: str | None = None
    default_costs_preset: str | None = None


#: Round trips kept in ``tearsheet.json`` (and paged in the report); ``n_round_trips``
#: counts them all.
MAX_ROUND_TRIPS = 500
#: Symbols with a row of their own in the attribution (best and worst halves); the rest
#: are summed into ``attribution_rest``.
MAX_ATTRIBUTION = 100


class TearSheet(_Model):
    """The figures of ``report.html``, as ``tearsheet.json`` (docs/engine-conventions.md §4)."""

    header: TearSheetHeader
    var_cutoff: Finite = 0.05
    returns: ReturnStats
    benchmark: ReturnStats | None = None
    relative: RelativeStats | None = None
    drawdowns: list[DrawdownPeriod] = Field(default_factory=list)
    annual_returns: list[PeriodReturn] = Field(default_factory=list)
    monthly_returns: list[PeriodReturn] = Field(default_factory=list)
    distribution: Histogram = Histogram()
    best_days: list[DayReturn] = Field(default_factory=list)
    worst_days: list[DayReturn] = Field(default_factory=list)
    round_trips: Annotated[list[RoundTrip], Field(max_length=MAX_ROUND_TRIPS)] = Field(
        default_factory=list)
    n_round_trips: int = 0
    round_trip_summary: RoundTripSummary = RoundTripSummary()
    attribution: Annotated[list[SymbolAttribution], Field(max_length=MAX_ATTRIBUTION)] = Field(
        default_factory=list)
    attribution_rest: SymbolAttribution | None = None
    n_symbols_traded: int = 0
    costs: CostBreakdown
    net_pnl: Finite
