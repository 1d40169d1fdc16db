/**
 * The sweep view (docs/architecture.md §2, "In the lab"): `GET /v1/sweeps/{id}` as a results
 * table and a heatmap of one metric over two grid parameters (a bar chart for one).
 * Clicking a cell or a row selects that child job in the panel.
 */
import { formatNumber, Kind, METRICS } from './format';
import { JobStatus, JobView, Metrics } from './models';
import { escape, paramPairs } from './text';

/** One line of the results table: a child's grid point, status and metrics. */
export interface SweepRow {
  job_id: string;
  params: { [name: string]: unknown };
  status: JobStatus;
  reason?: string | null;
  metrics?: Metrics | null;
}

/** One walk-forward step: the run chosen on the training window and its next window. */
export interface WalkForwardFold {
  train_start: string;
  train_end: string;
  test_start: string;
  test_end: string;
  job_id: string;
  params: { [name: string]: unknown };
  train_sharpe: number;
  test_sharpe: number;
}

/** How likely the sweep's best run is a fluke (docs/overfitting.md); Sharpe ratios annualised. */
export interface Overfitting {
  n_trials: number;
  n_days: number;
  mean_correlation: number;
  effective_trials: number;
  best_job_id: string;
  best_params: { [name: string]: unknown };
  best_sharpe: number;
  expected_max_sharpe: number;
  dsr: number;
  pbo?: number | null;
  cscv_splits?: number | null;
  logits?: number[] | null;
  degradation_slope?: number | null;
  prob_oos_loss?: number | null;
  walk_forward?: WalkForwardFold[] | null;
  oos_sharpe?: number | null;
  overfit: boolean;
  verdict: string;
  problems?: string[];
}

/**
 * `GET /v1/sweeps/{id}`: the sweep (aggregate status), its rows in grid order, and its
 * overfitting statistics once it has ended (else a note saying why they are missing).
 */
export interface SweepResults {
  sweep: JobView;
  rows: SweepRow[];
  overfitting?: Overfitting | null;
  overfitting_note?: string | null;
}

/** What the heatmap shows: a metric, over `x` (and `y`, when the grid has two parameters). */
export interface SweepChoice {
  metric: keyof Metrics;
  x: string;
  y: string | null;
}

/** The table's metric columns: the ones a sweep is usually read by. */
const COLUMNS: Array<[keyof Metrics, string, Kind]> = [
  ['sharpe', 'Sharpe', 'ratio'],
  ['cagr', 'CAGR', 'spct'],
  ['max_drawdown', 'Max DD', 'pct'],
  ['total_return', 'Return', 'spct'],
  ['n_trades', 'Trades', 'int']
];

function label(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** The distinct values of a parameter, in grid order (first seen first), as labels. */
function levels(rows: SweepRow[], name: string): string[] {
  return [...new Set(rows.map(row => label(row.params[name])))];
}

/** The grid's parameters: those that vary (all of them for a one-point grid). */
export function gridParams(rows: SweepRow[]): string[] {
  const names = [...new Set(rows.flatMap(row => Object.keys(row.params)))];
  const varying = names.filter(name => levels(rows, name).length > 1);
  return varying.length > 0 ? varying : names;
}

/** The researcher's previous choice where it still fits, else Sharpe over the first two. */
export function choose(params: string[], previous: SweepChoice | null): SweepChoice {
  const metric = previous?.metric ?? 'sharpe';
  const x = previous && params.includes(previous.x) ? previous.x : params[0] ?? '';
  const rest = params.filter(p => p !== x);
  const y = previous?.y && rest.includes(previous.y) ? previous.y : rest[0] ?? null;
  return { metric, x, y };
}

function metricOf(row: SweepRow, metric: keyof Metrics): number | null {
  const value = row.metrics?.[metric];
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function options(values: Array<[string, string]>, chosen: string | null): string {
  return values
    .map(([value, text]) => `<option value="${escape(value)}"${value === chosen ? ' selected' : ''}>${escape(text)}</option>`)
    .join('');
}

/** The metric and axis pickers above the chart. */
export function controlsHtml(params: string[], choice: SweepChoice): string {
  const metrics = METRICS.map(([key, text]) => [key, text] as [string, string]);
  const axes = params.map(p => [p, p] as [string, string]);
  const y =
    params.length > 1
      ? `<label>y <select class="pitwall-sweep-y">${options(axes.filter(([p]) => p !== choice.x), choice.y)}</select></label>`
      : '';
  return (
    `<label>metric <select class="pitwall-sweep-metric">${options(metrics, choice.metric)}</select></label>` +
    `<label>x <select class="pitwall-sweep-x">${options(axes, choice.x)}</select></label>${y}`
  );
}

/**
 * The chart of the choice: a heatmap (z[y][x], the child's job id in `customdata` for the
 * click), or bars for a one-parameter grid. Where other parameters vary too, a cell shows
 * the best (highest) value among the children that share its x and y.
 */
export function sweepChart(rows: SweepRow[], choice: SweepChoice): { data: object[]; layout: object } {
  const title = METRICS.find(([key]) => key === choice.metric)?.[1] ?? choice.metric;
  const xs = levels(rows, choice.x);
  const ys = choice.y ? levels(rows, choice.y) : [''];
  const z: Array<Array<number | null>> = ys.map(() => xs.map(() => null));
  const ids: Array<Array<string | null>> = ys.map(() => xs.map(() => null));
  for (const row of rows) {
    const xi = xs.indexOf(label(row.params[choice.x]));
    const yi = choice.y ? ys.indexOf(label(row.params[choice.y])) : 0;
    const value = metricOf(row, choice.metric);
    if (ids[yi][xi] === null || (value !== null && (z[yi][xi] === null || value > (z[yi][xi] as number)))) {
      z[yi][xi] = value;
      ids[yi][xi] = row.job_id;
    }
  }
  const axis = (name: string) => ({ title: { text: name }, type: 'category', automargin: true });
  const layout = {
    autosize: true,
    margin: { l: 50, r: 10, t: 28, b: 40 },
    title: { text: `${title} by ${choice.x}${choice.y ? ' × ' + choice.y : ''}`, font: { size: 12 } },
    xaxis: axis(choice.x),
    yaxis: choice.y ? axis(choice.y) : { title: { text: title }, automargin: true }
  };
  if (!choice.y) {
    return { data: [{ type: 'bar', x: xs, y: z[0], customdata: ids[0], name: title }], layout };
  }
  const heatmap = {
    type: 'heatmap',
    x: xs,
    y: ys,
    z,
    customdata: ids,
    // Red low, green high (Plotly has no built-in red-yellow-green scale).
    colorscale: [
      [0, '#d73027'],
      [0.5, '#ffffbf'],
      [1, '#1a9850']
    ],
    texttemplate: '%{z:.3g}',
    hovertemplate: `${choice.x}=%{x}<br>${choice.y}=%{y}<br>${title}=%{z}<extra></extra>`,
    colorbar: { thickness: 10 }
  };
  return { data: [heatmap], layout };
}

/** The results table, one row per child in grid order; a row is clicked to select it. */
export function sweepTable(results: SweepResults, params: string[]): string {
  const head =
    params.map(p => `<th>${escape(p)}</th>`).join('') + '<th>status</th>' + COLUMNS.map(([, text]) => `<th>${text}</th>`).join('');
  const body = results.rows
    .map(row => {
      const cells =
        params.map(p => `<td data-param="${escape(p)}">${escape(label(row.params[p]))}</td>`).join('') +
        `<td class="pitwall-status" data-status="${row.status}">${row.status}</td>` +
        COLUMNS.map(([key, , kind]) => `<td data-metric="${key}">${formatNumber(row.metrics?.[key] as number | undefined, kind)}</td>`).join('');
      return `<tr class="pitwall-sweep-row" data-id="${row.job_id}" title="select ${row.job_id}">${cells}</tr>`;
    })
    .join('');
  return `<table class="pitwall-sweep-table"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

/** The sweep's head: its id, aggregate status, how many children have finished, and its
 * overfitting block ({@link overfittingBlock}). */
export function sweepHead(results: SweepResults): string {
  const sweep = results.sweep;
  const done = results.rows.filter(r => r.status !== 'PENDING' && r.status !== 'RUNNING').length;
  const reason = sweep.reason ? `<p class="pitwall-reason">${escape(sweep.reason)}</p>` : '';
  return (
    `<h4>${sweep.id}</h4><p class="pitwall-detail-status" data-status="${sweep.status}">` +
    `sweep · ${sweep.status} · ${done}/${results.rows.length} runs finished</p>${reason}` +
    overfittingBlock(results)
  );
}

function figure(value: number | null | undefined, digits: number): string {
  return typeof value === 'number' && Number.isFinite(value) ? value.toFixed(digits) : '–';
}

/**
 * How likely the best run is a fluke: the verdict (an error colour when flagged), then the
 * DSR of the best run, CSCV's PBO and the walk-forward's out-of-sample Sharpe; or the note
 * saying why they are not there yet.
 */
export function overfittingBlock(results: SweepResults): string {
  const o = results.overfitting;
  if (!o) {
    const note = results.overfitting_note;
    return note ? `<div class="pitwall-overfit"><p class="pitwall-note">Overfitting: ${escape(note)}</p></div>` : '';
  }
  const stats: Array<[string, string, string, string]> = [
    ['dsr', 'DSR', figure(o.dsr, 3), `Deflated Sharpe Ratio of the best run (Sharpe ${figure(o.best_sharpe, 2)}) after ${figure(o.effective_trials, 1)} effective trials; skill needs 0.95`],
    ['pbo', 'PBO', figure(o.pbo, 3), o.cscv_splits ? `Probability of Backtest Overfitting, CSCV with S=${o.cscv_splits}` : 'too few days for CSCV'],
    ['oos_sharpe', 'OOS Sharpe', figure(o.oos_sharpe, 2), `walk-forward out-of-sample Sharpe over ${o.walk_forward?.length ?? 0} folds`]
  ];
  const cells = stats
    .map(([key, name, value, title]) => `<th title="${escape(title)}">${name}</th><td data-stat="${key}" title="${escape(title)}">${value}</td>`)
    .join('');
  const problems = (o.problems ?? []).map(p => `<p class="pitwall-note">${escape(p)}</p>`).join('');
  return (
    `<div class="pitwall-overfit" data-overfit="${o.overfit}">` +
    `<p class="${o.overfit ? 'pitwall-reason' : 'pitwall-note'} pitwall-overfit-verdict">${escape(o.verdict)}</p>` +
    `<table class="pitwall-overfit-stats"><tr>${cells}</tr></table>${problems}${walkForwardFolds(o)}</div>`
  );
}

/**
 * The walk-forward, fold by fold (folded): the training window, the parameters chosen on
 * it and their Sharpe there, then the next window and that run's Sharpe on it.
 */
export function walkForwardFolds(o: Overfitting): string {
  const folds = o.walk_forward ?? [];
  if (!folds.length) {
    return '';
  }
  const rows = folds
    .map(
      (f, i) =>
        `<tr class="pitwall-fold"><td>${i + 1}</td><td>${escape(f.train_start)} → ${escape(f.train_end)}</td>` +
        `<td data-fold="params">${escape(paramPairs(f.params))}</td><td data-fold="train">${figure(f.train_sharpe, 2)}</td>` +
        `<td>${escape(f.test_start)} → ${escape(f.test_end)}</td><td data-fold="test">${figure(f.test_sharpe, 2)}</td></tr>`
    )
    .join('');
  return (
    `<details class="pitwall-walk-forward"><summary>Walk-forward: ${folds.length} folds</summary>` +
    '<table><tr><th>#</th><th>Train</th><th>Chosen</th><th>Sharpe (train)</th><th>Test</th><th>Sharpe (test)</th></tr>' +
    `${rows}</table></details>`
  );
}
