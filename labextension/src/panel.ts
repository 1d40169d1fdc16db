import { showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import Plotly from 'plotly.js-dist-min';
import { openEvents, pitwallUrl, requestAPI } from './handler';
import { JobView, Metrics, ProgressEvent } from './models';

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

/** The events stream of the selected running job: where to resume, and whether it ended. */
interface LiveStream {
  id: string;
  socket: WebSocket | null;
  lastSeq: number;
  drawn: boolean;
  retry: number | null;
}

const RETRY_MS = 1000;
const LAYOUT = { height: 260, margin: { l: 50, r: 10, t: 10, b: 30 } };

/** Milliseconds since the epoch as the equity endpoint writes times (UTC, seconds). */
function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The Backtests side panel: the researcher's jobs, live, and the selected job's results. */
export class BacktestsPanel extends Widget {
  private jobs: JobView[] = [];
  private selected: string | null = null;
  private plotted: string | null = null;
  private timer: number | null = null;
  private live: LiveStream | null = null;
  /** Chart updates, one after the other (Plotly calls are asynchronous). */
  private drawing: Promise<unknown> = Promise.resolve();
  /** The latest progress an event reported, per job (the list poll may lag behind). */
  private readonly liveProgress = new Map<string, number>();
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
    this.stopLive();
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
        const live = !TERMINAL.has(job.status);
        const progress = Math.max(job.progress ?? 0, live ? this.liveProgress.get(job.id) ?? 0 : 0);
        const pct = Math.round(progress * 100);
        const actions = [
          live ? `<button data-action="cancel" data-id="${job.id}">Cancel</button>` : '',
          job.status === 'COMPLETED' ? `<button data-action="report" data-id="${job.id}">Report</button>` : '',
          TERMINAL.has(job.status) ? `<button data-action="rerun" data-id="${job.id}">Rerun</button>` : ''
        ].join('');
        const cls = job.id === this.selected ? ' pitwall-selected' : '';
        // A flagged lookahead audit is never shown as a plain success.
        const audit = job.metrics?.lookahead?.status;
        const badge =
          audit === 'flagged'
            ? '<span class="pitwall-audit" data-audit="flagged" title="lookahead audit flagged">&#9888; lookahead</span>'
            : '';
        return (
          `<div class="pitwall-job${cls}" data-id="${job.id}"><span class="pitwall-id">${job.id.slice(0, 8)}</span>` +
          `<span class="pitwall-status" data-status="${job.status}">${job.status}</span>${badge}` +
          `<progress max="100" value="${pct}"></progress><span class="pitwall-actions">${actions}</span></div>`
        );
      })
      .join('');
  }

  private async renderDetail(): Promise<void> {
    const job = this.jobs.find(j => j.id === this.selected);
    if (!job) {
      this.detail.innerHTML = '';
      this.stopLive();
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
    const lookahead = job.metrics?.lookahead;
    const verdict = lookahead
      ? `<p class="pitwall-audit" data-audit="${lookahead.status}">${escape(lookahead.statement ?? '')}</p>`
      : '';
    this.detail.innerHTML = `<h4>${job.id}</h4><p>${job.status}</p>${reason}${verdict}${metrics}`;
    if (job.status === 'COMPLETED') {
      this.stopLive();
      if (this.plotted !== job.id) {
        // The full curve of the equity artifact replaces the running one.
        this.plotted = job.id;
        const points = await requestAPI<EquityPoints>(`equity/${job.id}`);
        await this.draw(() => this.plot(points.ts, points.equity, 'final'));
      }
    } else if (!TERMINAL.has(job.status)) {
      this.follow(job.id);
    } else {
      this.stopLive();
      if (this.plotted !== null) {
        this.plotted = null;
        await this.draw(() => this.clearChart());
      }
    }
  }

  /** Stream the running job's events: the progress bar and the growing equity curve. */
  private follow(id: string): void {
    if (this.live?.id === id) {
      return;
    }
    this.stopLive();
    this.plotted = `live:${id}`;
    void this.draw(() => this.clearChart());
    this.live = { id, socket: null, lastSeq: 0, drawn: false, retry: null };
    this.connect(this.live);
  }

  private connect(live: LiveStream): void {
    const socket = openEvents(live.id, live.lastSeq);
    live.socket = socket;
    socket.onmessage = message => {
      if (this.live === live) {
        this.onEvent(live, JSON.parse(String(message.data)) as ProgressEvent);
      }
    };
    socket.onclose = closed => {
      if (this.live !== live || live.socket !== socket) {
        return;
      }
      live.socket = null;
      if (closed.code === 1000) {
        void this.refresh(); // the job ended: show its final state now
        return;
      }
      // Lost (a restart, the API went away): resume after the last event seen.
      live.retry = window.setTimeout(() => {
        live.retry = null;
        if (this.live === live) {
          this.connect(live);
        }
      }, RETRY_MS);
    };
  }

  private onEvent(live: LiveStream, event: ProgressEvent): void {
    if (event.seq <= live.lastSeq) {
      return; // already seen (a resumed stream never repeats, but be sure)
    }
    live.lastSeq = event.seq;
    if (typeof event.progress === 'number') {
      this.liveProgress.set(live.id, event.progress);
      const bar = this.list.querySelector(`.pitwall-job[data-id="${live.id}"] progress`) as HTMLProgressElement | null;
      if (bar) {
        bar.value = Math.round(event.progress * 100);
      }
    }
    const points = event.equity ?? [];
    if (points.length > 0) {
      const x = points.map(([ts]) => isoSeconds(ts));
      const y = points.map(([, value]) => value);
      void this.draw(async () => {
        if (this.live !== live) {
          return; // the job ended or another one was selected meanwhile
        }
        if (!live.drawn) {
          live.drawn = true;
          await this.plot(x, y, 'live');
        } else {
          await Plotly.extendTraces(this.chart, { x: [x], y: [y] }, [0]);
        }
      });
    }
    if (event.kind === 'status' && event.status && TERMINAL.has(event.status)) {
      void this.refresh();
    }
  }

  private stopLive(): void {
    const live = this.live;
    if (!live) {
      return;
    }
    this.live = null;
    this.liveProgress.delete(live.id);
    if (live.retry !== null) {
      window.clearTimeout(live.retry);
    }
    live.socket?.close();
    live.socket = null;
  }

  private draw(step: () => Promise<unknown> | void): Promise<unknown> {
    this.drawing = this.drawing.then(step).catch(error => console.error('Pitwall chart:', error));
    return this.drawing;
  }

  private async plot(x: string[], y: number[], kind: 'live' | 'final'): Promise<void> {
    this.chart.dataset.plot = kind;
    await Plotly.react(this.chart, [{ x, y, type: 'scatter', mode: 'lines', name: 'equity' }], LAYOUT);
  }

  private clearChart(): void {
    delete this.chart.dataset.plot;
    Plotly.purge(this.chart);
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
