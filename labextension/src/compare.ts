/**
 * Two runs side by side (docs/architecture.md §2, "In the lab"): every metric of run A and
 * run B and the difference B − A, and both equity curves overlaid in one chart.
 */
import { formatDiff, formatNumber, METRICS } from './format';
import { JobView, Metrics } from './models';
import { escape, runLabel } from './text';

/** An equity curve as `/pitwall/equity/{id}` answers it. */
export interface EquityPoints {
  ts: string[];
  equity: number[];
}

function valueOf(metrics: Metrics | null | undefined, key: keyof Metrics): number | null {
  const value = metrics?.[key];
  return typeof value === 'number' ? value : null;
}

/** The metrics table of A, B and B − A; a metric neither run has is left out. */
export function compareTable(a: JobView, b: JobView): string {
  const rows = METRICS.map(([key, label, kind]) => {
    const va = valueOf(a.metrics, key);
    const vb = valueOf(b.metrics, key);
    if (va === null && vb === null) {
      return '';
    }
    const diff = va !== null && vb !== null ? vb - va : null;
    return (
      `<tr data-metric="${key}"><th>${label}</th><td data-run="a">${formatNumber(va, kind)}</td>` +
      `<td data-run="b">${formatNumber(vb, kind)}</td><td data-run="diff">${formatDiff(diff, kind)}</td></tr>`
    );
  }).join('');
  return (
    '<table class="pitwall-metrics pitwall-compare-table"><thead><tr><th></th>' +
    `<th title="${escape(runLabel(a))}">A</th><th title="${escape(runLabel(b))}">B</th><th>B − A</th></tr></thead>` +
    `<tbody>${rows}</tbody></table>`
  );
}

/** The head of the comparison: which run is A and which is B, and how to leave it. */
export function compareHead(a: JobView, b: JobView): string {
  return (
    '<h4>Comparison</h4><p class="pitwall-compare-runs">' +
    `<span data-run="a"><b>A</b> ${escape(runLabel(a))}</span><br>` +
    `<span data-run="b"><b>B</b> ${escape(runLabel(b))}</span></p>` +
    '<div class="pitwall-detail-actions"><button data-action="uncompare">Close comparison</button></div>'
  );
}

/** Both equity curves as Plotly traces, named A and B like the table's columns. */
export function compareTraces(a: JobView, pa: EquityPoints, b: JobView, pb: EquityPoints): object[] {
  return [
    { x: pa.ts, y: pa.equity, type: 'scatter', mode: 'lines', name: `A ${a.id.slice(0, 8)}` },
    { x: pb.ts, y: pb.equity, type: 'scatter', mode: 'lines', name: `B ${b.id.slice(0, 8)}` }
  ];
}
