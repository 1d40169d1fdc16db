import { Costs, Metrics } from './models';

/**
 * Metric values as short text, whatever the number: the same rules as
 * `pitwall.engine.report.format_number` (NaN and infinities spelled out, a magnitude past
 * 1e6 in the unit shown written as a bound, never as a 300-digit string).
 */
export type Kind = 'pct' | 'spct' | 'ratio' | 'x' | 'money' | 'int' | 'days';

export const ABSURD = 1e6;
export const HIGH_TURNOVER = 100;

export function formatNumber(value: number | null | undefined, kind: Kind = 'ratio'): string {
  if (value === null || value === undefined) {
    return '–';
  }
  if (!Number.isFinite(value)) {
    return Number.isNaN(value) ? 'nan' : value > 0 ? 'inf' : '-inf';
  }
  if (kind === 'money' || kind === 'int' || kind === 'days') {
    if (Math.abs(value) >= 1e15) {
      return value.toExponential(3);
    }
    if (kind === 'money') {
      return value.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    }
    return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
  }
  const unit = kind === 'pct' || kind === 'spct' ? ' %' : kind === 'x' ? 'x' : '';
  const shown = kind === 'pct' || kind === 'spct' ? value * 100 : value;
  if (Math.abs(shown) > ABSURD) {
    return (shown > 0 ? '>' : '<-') + `1e6${unit}`;
  }
  switch (kind) {
    case 'pct':
      return `${shown.toFixed(2)}%`;
    case 'spct':
      return `${shown >= 0 ? '+' : ''}${shown.toFixed(2)}%`;
    case 'x':
      return `${shown.toFixed(2)}x`;
    default:
      return shown.toFixed(3);
  }
}

/** The metrics the panel shows, in reading order (the report and the widget show them all). */
export const METRICS: Array<[keyof Metrics, string, Kind]> = [
  ['total_return', 'Total return', 'spct'],
  ['cagr', 'CAGR', 'spct'],
  ['annual_volatility', 'Annual volatility', 'pct'],
  ['sharpe', 'Sharpe', 'ratio'],
  ['sortino', 'Sortino', 'ratio'],
  ['calmar', 'Calmar', 'ratio'],
  ['max_drawdown', 'Max drawdown', 'pct'],
  ['max_drawdown_days', 'Max drawdown duration (days)', 'days'],
  ['win_rate', 'Win rate', 'pct'],
  ['profit_factor', 'Profit factor', 'ratio'],
  ['turnover', 'Turnover (annual)', 'x'],
  ['exposure', 'Exposure (mean gross)', 'pct'],
  ['n_trades', 'Trades', 'int'],
  ['beta', 'Beta', 'ratio'],
  ['alpha', 'Alpha (annual)', 'spct'],
  ['n_days', 'Days', 'int'],
  ['n_bars', 'Bars', 'int'],
  ['final_equity', 'Final equity', 'money']
];

/** Whether a spec's costs charge nothing at all (commission, spread, slippage, borrow). */
export function costsAreZero(costs: Costs | undefined): boolean {
  const c = costs ?? {};
  return (
    !c.commission_bps &&
    !c.slippage_bps &&
    !c.commission_per_share &&
    !c.borrow_bps &&
    !c.spread_bps &&
    (c.spread_model ?? 'fixed') === 'fixed'
  );
}

/** The warning of `pitwall.engine.report.cost_warning`: high turnover and no costs at all. */
export function costWarning(metrics: Metrics | null | undefined, costs: Costs | undefined): string | null {
  if (!metrics || !costsAreZero(costs)) {
    return null;
  }
  const turnover = metrics.turnover;
  if (!(turnover > HIGH_TURNOVER)) {
    return null;
  }
  return (
    `Turnover is ${formatNumber(turnover, 'x')} a year and the run charged no costs ` +
    '(commission, spread, slippage, borrow all zero): the result says nothing until costs are set.'
  );
}

/**
 * A difference of two metric values (B − A) as short text, signed: a fraction as percent
 * points, anything else in its own unit; absurd differences are bounds like the values.
 */
export function formatDiff(value: number | null | undefined, kind: Kind = 'ratio'): string {
  const text = formatNumber(value, kind === 'pct' ? 'spct' : kind);
  return typeof value === 'number' && value > 0 && /^\d/.test(text) ? `+${text}` : text;
}
