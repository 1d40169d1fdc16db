import { showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import Plotly from 'plotly.js-dist-min';
import { costWarning, formatNumber, METRICS } from './format';
import { openEvents, requestAPI } from './handler';
import { JobView, ProgressEvent } from './models';

const TERMINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT']);

/** A job as the extension lists it: the API's view, plus the notebook it came from. */
interface JobRow extends JobView {
  notebook?: string | null;
}

/** `GET /pitwall/log/{id}`: the job's log and its failure, frames named by cell. */
interface JobLog {
  job_id: string;
  status: string;
  reason: string | null;
  notebook: string | null;
  mapped: boolean;
  log: string;
  failure: {
    traceback: string;
    error: string;
    noise_lines: number;
    cell: string | null;
    cell_id: string | null;
  } | null;
}

/** What the panel asks of the lab: open a job's report (or log) in a main-area tab. */
export interface PanelHost {
  openFile(id: string, file: 'report' | 'log'): void;
}

type SortKey = 'newest' | 'oldest' | 'sharpe' | 'status';

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
const LAYOUT = { height: 260, autosize: true, margin: { l: 60, r: 10, t: 10, b: 40 } };
const CONFIG = { responsive: true, displaylogo: false };

/** The audit's state of a job: flagged is never shown as a plain success. */
function auditOf(job: JobView): string {
  return job.metrics?.lookahead?.status ?? 'none';
}

function shortTime(iso: string | null | undefined): string {
  if (!iso) {
    return '';
  }
  const d = new Date(iso);
  return `${d.toISOString().slice(0, 10)} ${d.toTimeString().slice(0, 5)}`;
}

function duration(job: JobView): string {
  if (!job.started_at) {
    return '';
  }
  const end = job.finished_at ? new Date(job.finished_at).getTime() : Date.now();
  const s = Math.max(0, Math.round((end - new Date(job.started_at).getTime()) / 1000));
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

function paramsText(job: JobView): string {
  const params = job.spec.params ?? {};
  return Object.entries(params)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(' ');
}

function universeText(job: JobView): string {
  const u = job.spec.universe;
  return u.length > 4 ? `${u.slice(0, 4).join(',')}+${u.length - 4}` : u.join(',');
}

/** Milliseconds since the epoch as the equity endpoint writes times (UTC, seconds). */
function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The Backtests side panel: the researcher's jobs, live, and the selected job's results. */
export class BacktestsPanel extends Widget {
  private jobs: JobRow[] = [];
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
  private readonly logView: HTMLElement;
  private readonly filter: HTMLInputElement;
  private readonly sort: HTMLSelectElement;
  /** The job whose log is shown (or being fetched). */
  private logShown: string | null = null;

  constructor(private readonly host: PanelHost) {
    super();
    this.id = 'pitwall-backtests';
    this.title.label = 'Backtests';
    this.title.caption = 'Pitwall backtests';
    this.addClass('pitwall-panel');
    this.node.innerHTML =
      '<h3>Backtests</h3>' +
      '<div class="pitwall-controls"><input class="pitwall-filter" type="search" ' +
      'placeholder="Filter: symbol, param, status, flagged…"/>' +
      '<select class="pitwall-sort" title="Sort">' +
      '<option value="newest">newest</option><option value="oldest">oldest</option>' +
      '<option value="sharpe">Sharpe</option><option value="status">status</option></select></div>' +
      '<div class="pitwall-jobs"></div>' +
      // The chart first under the list, so it stays in view however long the list grows.
      '<div class="pitwall-below"><div class="pitwall-equity"></div><div class="pitwall-detail"></div>' +
      '<div class="pitwall-log"></div></div>';
    this.list = this.node.querySelector('.pitwall-jobs') as HTMLElement;
    this.detail = this.node.querySelector('.pitwall-detail') as HTMLElement;
    this.chart = this.node.querySelector('.pitwall-equity') as HTMLElement;
    this.logView = this.node.querySelector('.pitwall-log') as HTMLElement;
    this.filter = this.node.querySelector('.pitwall-filter') as HTMLInputElement;
    this.sort = this.node.querySelector('.pitwall-sort') as HTMLSelectElement;
    this.list.addEventListener('click', event => void this.onClick(event));
    this.detail.addEventListener('click', event => void this.onClick(event));
    this.filter.addEventListener('input', () => this.renderList());
    this.sort.addEventListener('change', () => this.renderList());
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
      const body = await requestAPI<{ items: JobRow[] }>('api/v1/backtests?limit=50');
      this.jobs = body.items;
    } catch (error) {
      this.detail.textContent = `Cannot list backtests: ${error}`;
      return;
    }
    this.renderList();
    await this.renderDetail();
  }

  /** The jobs the filter keeps, in the chosen order. */
  private visible(): JobRow[] {
    const words = this.filter.value.toLowerCase().split(/\s+/).filter(w => w.length > 0);
    const kept = this.jobs.filter(job => {
      const text = [
        job.id,
        job.status,
        auditOf(job),
        auditOf(job) === 'flagged' ? 'flagged lookahead' : '',
        job.spec.universe.join(' '),
        paramsText(job),
        job.notebook ?? '',
        job.spec.start,
        job.spec.end
      ]
        .join(' ')
        .toLowerCase();
      return words.every(w => text.includes(w));
    });
    const key = this.sort.value as SortKey;
    const sharpe = (j: JobRow) => (j.metrics && Number.isFinite(j.metrics.sharpe) ? j.metrics.sharpe : -Infinity);
    const by: Record<SortKey, (a: JobRow, b: JobRow) => number> = {
      newest: (a, b) => b.created_at.localeCompare(a.created_at),
      oldest: (a, b) => a.created_at.localeCompare(b.created_at),
      sharpe: (a, b) => sharpe(b) - sharpe(a),
      status: (a, b) => a.status.localeCompare(b.status) || b.created_at.localeCompare(a.created_at)
    };
    return kept.sort(by[key]);
  }

  private renderList(): void {
    this.list.innerHTML = this.visible()
      .map(job => {
        const live = !TERMINAL.has(job.status);
        const progress = Math.max(job.progress ?? 0, live ? this.liveProgress.get(job.id) ?? 0 : 0);
        const pct = Math.round(progress * 100);
        const failed = job.status === 'FAILED' || job.status === 'TIMED_OUT';
        const actions = [
          live ? `<button data-action="cancel" data-id="${job.id}">Cancel</button>` : '',
          job.status === 'COMPLETED' ? `<button data-action="report" data-id="${job.id}">Report</button>` : '',
          failed ? `<button data-action="log" data-id="${job.id}">Log</button>` : '',
          TERMINAL.has(job.status) ? `<button data-action="rerun" data-id="${job.id}">Rerun</button>` : ''
        ].join('');
        const cls = job.id === this.selected ? ' pitwall-selected' : '';
        // A flagged lookahead audit is never shown as a plain success.
        const audit = auditOf(job);
        const badge =
          audit === 'flagged'
            ? '<span class="pitwall-audit" data-audit="flagged" title="the lookahead audit flagged this run: its results use the future">&#9888; lookahead</span>'
            : audit === 'no_lookahead_found' || audit === 'exact'
              ? '<span class="pitwall-audit" data-audit="ok" title="lookahead audit: no lookahead found">&#10004; audit</span>'
              : '';
        const warn = costWarning(job.metrics, job.spec.costs)
          ? '<span class="pitwall-cost-badge" title="high turnover and no costs">&#9888; no costs</span>'
          : '';
        const name = job.notebook ? `<span class="pitwall-name">${escape(job.notebook)}</span>` : '';
        const meta =
          `<div class="pitwall-meta">${name}<span>${escape(universeText(job))}</span>` +
          `<span>${escape(job.spec.start)}→${escape(job.spec.end)}</span>` +
          `<span class="pitwall-params">${escape(paramsText(job))}</span>` +
          `<span title="submitted">${shortTime(job.created_at)}</span><span title="duration">${duration(job)}</span></div>`;
        return (
          `<div class="pitwall-job${cls}" data-id="${job.id}"><span class="pitwall-id">${job.id.slice(0, 8)}</span>` +
          `<span class="pitwall-status" data-status="${job.status}" data-audit="${audit}">${job.status}</span>${badge}${warn}` +
          `<progress max="100" value="${pct}"></progress><span class="pitwall-actions">${actions}</span>${meta}</div>`
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
        METRICS.filter(([key]) => typeof (job.metrics as any)[key] === 'number')
          .map(([key, label, kind]) => {
            const value = (job.metrics as any)[key] as number;
            return `<tr><th>${label}</th><td data-metric="${key}">${formatNumber(value, kind)}</td></tr>`;
          })
          .join('') +
        '</table>'
      : '';
    const lookahead = job.metrics?.lookahead;
    const verdict = lookahead
      ? `<p class="pitwall-audit" data-audit="${lookahead.status}">` +
        `${lookahead.status === 'flagged' ? '&#9888; LOOKAHEAD FLAGGED: ' : ''}${escape(lookahead.statement ?? '')}</p>`
      : '';
    const warning = costWarning(job.metrics, job.spec.costs);
    const costs = warning ? `<p class="pitwall-cost-warning">&#9888; ${escape(warning)}</p>` : '';
    const failed = job.status === 'FAILED' || job.status === 'TIMED_OUT';
    const buttons =
      (job.status === 'COMPLETED' ? `<button data-action="report" data-id="${job.id}">Open report</button>` : '') +
      (TERMINAL.has(job.status) ? `<button data-action="log" data-id="${job.id}">Log</button>` : '');
    this.detail.innerHTML =
      `<h4>${job.id}</h4><p class="pitwall-detail-status" data-status="${job.status}" data-audit="${auditOf(job)}">` +
      `${job.status}${job.notebook ? ' · ' + escape(job.notebook) : ''}</p>${reason}${verdict}${costs}` +
      `<div class="pitwall-detail-actions">${buttons}</div>${metrics}`;
    if (failed && this.logShown !== job.id) {
      void this.showLog(job.id); // a failure is explained where it is shown
    } else if (!failed && this.logShown !== null && this.logShown !== job.id) {
      this.logShown = null;
      this.logView.innerHTML = '';
    }
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
    await Plotly.react(this.chart, [{ x, y, type: 'scatter', mode: 'lines', name: 'equity' }], LAYOUT, CONFIG);
  }

  private clearChart(): void {
    delete this.chart.dataset.plot;
    Plotly.purge(this.chart);
  }

  /** The job's log: its failure (the traceback, frames named by notebook cell), and all of it. */
  async showLog(id: string): Promise<void> {
    this.logShown = id;
    this.logView.innerHTML = '<p>Loading the log…</p>';
    let body: JobLog;
    try {
      body = await requestAPI<JobLog>(`log/${id}`);
    } catch (error) {
      if (this.logShown === id) {
        this.logView.innerHTML = `<p class="pitwall-reason">No log: ${escape(String(error))}</p>`;
      }
      return;
    }
    if (this.logShown !== id) {
      return;
    }
    const f = body.failure;
    const where = f?.cell
      ? ` in <b class="pitwall-log-cell">${escape(f.cell)}${body.notebook ? ' of ' + escape(body.notebook) : ''}</b>`
      : '';
    const head = f
      ? `<p class="pitwall-log-error">${escape(f.error)}${where}</p>` +
        `<pre class="pitwall-traceback">${escape(f.traceback)}</pre>` +
        (f.noise_lines ? `<p class="pitwall-note">${f.noise_lines} line(s) before the traceback left out.</p>` : '')
      : '';
    this.logView.innerHTML =
      `<h4>Log of ${id.slice(0, 8)}</h4>${head}` +
      `<details${f ? '' : ' open'}><summary>Full log</summary><pre class="pitwall-full-log">${escape(body.log)}</pre></details>`;
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
        this.selected = id;
        this.host.openFile(id, 'report');
      } else if (action === 'log') {
        this.selected = id;
        await this.showLog(id);
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
