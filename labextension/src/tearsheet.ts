import { formatNumber, Kind } from './format';
import { TearSheet } from './models';
import { escape } from './text';

/**
 * A completed run's tear sheet (its `tearsheet.json`, the figures of `report.html`) as the
 * panel shows it under the metrics, folded: the costs preset, the statistics against the
 * benchmark, tail risk, the deepest drawdowns, the cost breakdown and the round trips in
 * aggregate. The full pages (monthly heatmap, every round trip, attribution) are in the
 * report.
 */
export function tearSheetHtml(sheet: TearSheet): string {
  const rows = (pairs: Array<[string, string]>) =>
    pairs.map(([k, v]) => `<tr><th>${escape(k)}</th><td>${escape(v)}</td></tr>`).join('');
  const num = (value: number | null | undefined, kind: Kind = 'ratio') => formatNumber(value, kind);
  const h = sheet.header;
  const r = sheet.returns;
  const cut = `${Math.round((sheet.var_cutoff ?? 0.05) * 100)}%`;
  const stats: Array<[string, string]> = [
    ['Costs preset', h.costs_preset ?? '–'],
    ['Benchmark', h.benchmark],
    ['Best / worst day', `${num(r.best_day, 'spct')} / ${num(r.worst_day, 'spct')}`],
    [`Value at risk (${cut}, 1 day)`, num(r.value_at_risk, 'spct')],
    [`Expected shortfall (${cut}, 1 day)`, num(r.conditional_value_at_risk, 'spct')],
    ['Skew / excess kurtosis', `${num(r.skew)} / ${num(r.kurtosis)}`]
  ];
  const rel = sheet.relative;
  if (rel) {
    stats.push(
      ['Beta', num(rel.beta)],
      ['Alpha (annual)', num(rel.alpha, 'spct')],
      ['Tracking error (annual)', num(rel.tracking_error, 'pct')],
      ['Information ratio', num(rel.information_ratio)]
    );
  }
  const c = sheet.costs;
  const costs: Array<[string, string]> = (['commission', 'slippage', 'spread', 'impact', 'borrow'] as const)
    .filter(kind => c[kind] !== null && c[kind] !== undefined)
    .map(kind => [kind[0].toUpperCase() + kind.slice(1), num(c[kind], 'money')] as [string, string]);
  costs.push(['Trade costs (engine)', num(c.trade_costs, 'money')], ['Traded notional', num(c.traded_notional, 'money')]);
  const s = sheet.round_trip_summary ?? {};
  const trips: Array<[string, string]> = [
    ['Round trips (closed)', `${s.n ?? 0} (${s.n_closed ?? 0})`],
    ['Win rate (closed)', num(s.win_rate, 'pct')],
    ['Average win / loss', `${num(s.avg_win, 'money')} / ${num(s.avg_loss, 'money')}`],
    ['Profit factor', num(s.profit_factor)]
  ];
  const drawdowns = (sheet.drawdowns ?? []).slice(0, 5).map(
    (d, i) =>
      `<tr><td>${i + 1}</td><td>${escape(num(d.depth, 'pct'))}</td><td>${escape(d.peak)}</td>` +
      `<td>${escape(d.valley)}</td><td>${escape(d.recovery ?? 'not recovered')}</td></tr>`
  );
  const drawdownTable = drawdowns.length
    ? '<table class="pitwall-drawdowns"><tr><th>#</th><th>Depth</th><th>Peak</th><th>Valley</th>' +
      `<th>Recovery</th></tr>${drawdowns.join('')}</table>`
    : '<p>No day closed below its peak.</p>';
  return (
    `<details class="pitwall-tearsheet"><summary>Tear sheet (against ${escape(h.benchmark)})</summary>` +
    `<table class="pitwall-tearsheet-stats">${rows(stats)}</table>` +
    `<h5>Drawdown periods</h5>${drawdownTable}` +
    `<h5>Costs</h5><table class="pitwall-tearsheet-costs">${rows(costs)}</table>` +
    `<h5>Round trips</h5><table class="pitwall-tearsheet-trips">${rows(trips)}</table>` +
    '</details>'
  );
}
