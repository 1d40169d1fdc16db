import { showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import Plotly from 'plotly.js-dist-min';
import { pitwallUrl, requestAPI } from './handler';
import { JobView, Metrics } from './models';

const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT']);
const LABELS: Array<[keyof Metrics, string, (v: number) => string]> = [
  ['total_return', 'Total return', v => `${(v * 100).toFixed(2)}%`],
  ['cagr', 'CAGR', v => `${(v * 100).toFixed(2)}%`],
  ['annual_volatility', 'Annual volatility', v => `${(v * 100).toFixed(2)}%`],
  ['sharpe', 'Sharpe', v => v.toFixed(3)],
  ['sortino', 'Sortino', v => v.toFixed(3)],
  ['max_drawdown', 'Max drawdown', v => `${(v * 100).toFixed(2)}%`],
  ['turnover', 'Turnover (annual)', v => `${v.toFixed(2)}x`],
  ['exposure', 'Exposure (mean gross)', v => `${(v * 100).toFixed(2)}%`]
];

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

interface EquityPoints {
  ts: string[];
  equity: number[];
}

/** The Backtests side panel: the researcher's jobs, live, and the selected job's results. */
export class BacktestsPanel extends Widget {
  private jobs: JobView[] = [];
  private selected: string | null = null;
  private plotted: string | null = null;
  private timer: number | null = null;
  private readonly list: HTMLElement;
  private readonly detail: HTMLElement;
  private readonly chart: HTMLElement;

  constructor() {
    super();
    this.id = 'pitwall-backtests';
    this.title.label = 'Backtests';
    this.title.caption = 'Pitwall backtests';
    this.addClass('pitwall-panel');
    this.node.innerHTML =
      '<h3>Backtests</h3><div class="pitwall-jobs"></div>' +
      '<div class="pitwall-detail"></div><div class="pitwall-equity"></div>';
    this.list = this.node.querySelector('.pitwall-jobs') as HTMLElement;
    this.detail = this.node.querySelector('.pitwall-detail') as HTMLElement;
    this.chart = this.node.querySelector('.pitwall-equity') as HTMLElement;
    this.list.addEventListener('click', event => void this.onClick(event));
  }

  protected onAfterAttach(): void {
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), 1000);
  }

  protected onBeforeDetach(): void {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** Show a job as soon as it is submitted and select it. */
  track(id: string): void {
    this.selected = id;
    void this.refresh();
  }

  async refresh(): Promise<void> {
    try {
      const body = await requestAPI<{ items: JobView[] }>('api/v1/backtests?limit=50');
      this.jobs = body.items;
    } catch (error) {
      this.detail.textContent = `Cannot list backtests: ${error}`;
      return;
    }
    this.renderList();
    await this.renderDetail();
  }

  private renderList(): void {
    this.list.innerHTML = this.jobs
      .map(job => {
        const pct = Math.round((job.progress ?? 0) * 100);
        const live = !TERMINAL.has(job.status);
        const actions = [
          live ? `<button data-action="cancel" data-id="${job.id}">Cancel</button>` : '',
          job.status === 'COMPLETED' ? `<button data-action="report" data-id="${job.id}">Report</button>` : '',
          TERMINAL.has(job.status) ? `<button data-action="rerun" data-id="${job.id}">Rerun</button>` : ''
        ].join('');
        const cls = job.id === this.selected ? ' pitwall-selected' : '';
        return (
          `<div class="pitwall-job${cls}" data-id="${job.id}"><span class="pitwall-id">${job.id.slice(0, 8)}</span>` +
          `<span class="pitwall-status" data-status="${job.status}">${job.status}</span>` +
          `<progress max="100" value="${pct}"></progress><span class="pitwall-actions">${actions}</span></div>`
        );
      })
      .join('');
  }

  private async renderDetail(): Promise<void> {
    const job = this.jobs.find(j => j.id === this.selected);
    if (!job) {
      this.detail.innerHTML = '';
      return;
    }
    const reason = job.reason ? `<p class="pitwall-reason">${escape(job.reason)}</p>` : '';
    const metrics = job.metrics
      ? '<table class="pitwall-metrics">' +
        LABELS.map(([key, label, fmt]) => {
          const value = (job.metrics as any)[key] as number;
          return `<tr><th>${label}</th><td data-metric="${key}">${fmt(value)}</td></tr>`;
        }).join('') +
        '</table>'
      : '';
    this.detail.innerHTML = `<h4>${job.id}</h4><p>${job.status}</p>${reason}${metrics}`;
    if (job.status === 'COMPLETED' && this.plotted !== job.id) {
      this.plotted = job.id;
      const points = await requestAPI<EquityPoints>(`equity/${job.id}`);
      await Plotly.react(this.chart, [{ x: points.ts, y: points.equity, type: 'scatter', mode: 'lines', name: 'equity' }], {
        height: 260,
        margin: { l: 50, r: 10, t: 10, b: 30 }
      });
    } else if (job.status !== 'COMPLETED' && this.plotted !== null) {
      Plotly.purge(this.chart);
      this.plotted = null;
    }
  }

  private async onClick(event: MouseEvent): Promise<void> {
    const target = event.target as HTMLElement;
    const id = target.dataset.id ?? (target.closest('.pitwall-job') as HTMLElement | null)?.dataset.id;
    if (!id) {
      return;
    }
    const action = target.dataset.action;
    try {
      if (action === 'cancel') {
        await requestAPI(`api/v1/backtests/${id}/cancel`, { method: 'POST' });
      } else if (action === 'report') {
        window.open(pitwallUrl(`report/${id}`), '_blank');
      } else if (action === 'rerun') {
        const body = await requestAPI<{ id: string }>(`rerun/${id}`, { method: 'POST' });
        this.selected = body.id;
      } else {
        this.selected = id;
      }
    } catch (error) {
      await showErrorMessage('Pitwall', String(error));
    }
    await this.refresh();
  }
}
