import { showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import Plotly from 'plotly.js-dist-min';
import { compareHead, compareTable, compareTraces, EquityPoints } from './compare';
import { costWarning, formatNumber, METRICS } from './format';
import { openEvents, requestAPI } from './handler';
import { JobView, Metrics, ProgressEvent, TearSheet } from './models';
import { choose, controlsHtml, gridParams, sweepChart, SweepChoice, sweepHead, SweepResults, sweepTable } from './sweep';
import { tearSheetHtml } from './tearsheet';
import { escape, paramsText } from './text';

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

/** The events stream of the selected running job: where to resume, and whether it ended. */
interface LiveStream {
  id: string;
  socket: WebSocket | null;
  lastSeq: number;
  drawn: boolean;
  retry: number | null;
}

const RETRY_MS = 1000;
// No fixed size: the chart fills its box, which the researcher resizes (see `resizeBy`).
const LAYOUT = { autosize: true, margin: { l: 60, r: 10, t: 10, b: 40 } };
const COMPARE_LAYOUT = { ...LAYOUT, showlegend: true, legend: { orientation: 'h', y: 1.12 }, margin: { ...LAYOUT.margin, t: 28 } };
/** The chart box's height limits (px) when dragged. */
const MIN_CHART = 120;
const MAX_CHART = 1200;
/** The height (px) of the detail a dragged chart leaves visible. */
const MIN_DETAIL = 60;
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
  /** Rendered tear sheets of completed runs, by job id (a run's tear sheet never changes). */
  private readonly sheets = new Map<string, string>();
  private timer: number | null = null;
  private live: LiveStream | null = null;
  /** Chart updates, one after the other (Plotly calls are asynchronous). */
  private drawing: Promise<unknown> = Promise.resolve();
  /** The latest progress an event reported, per job (the list poll may lag behind). */
  private readonly liveProgress = new Map<string, number>();
  /** The runs ticked for comparison, A then B; two of them show the comparison. */
  private pair: string[] = [];
  /** The sweep view's metric and axes, kept while the researcher moves between sweeps. */
  private sweepChoice: SweepChoice | null = null;
  /** The last results of the selected sweep, and the state they were read in. */
  private sweepCache: { id: string; stamp: string; body: SweepResults } | null = null;
  /** What the sweep controls show now (they are rebuilt only when it changes: a rebuilt
   * select would close under the researcher's pointer at each poll). */
  private controlsKey = '';
  private readonly list: HTMLElement;
  private readonly detail: HTMLElement;
  private readonly chart: HTMLElement;
  private readonly box: HTMLElement;
  private readonly handle: HTMLElement;
  private readonly controls: HTMLElement;
  private readonly scroller: HTMLElement;
  private readonly resizer: ResizeObserver;
  private readonly logView: HTMLElement;
  private readonly filter: HTMLInputElement;
  private readonly sort: HTMLSelectElement;
  /** The list as last rendered. */
  private listHtml = '';
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
      // The chart first under the list, out of the detail's scrolling box, so it stays in
      // view however long the list or the detail grows; the handle under it resizes it.
      '<div class="pitwall-below"><div class="pitwall-chart-wrap">' +
      '<div class="pitwall-sweep-controls" hidden></div>' +
      '<div class="pitwall-chart-box" hidden><div class="pitwall-equity"></div></div>' +
      '<div class="pitwall-resize" hidden title="Drag to resize the chart"></div></div>' +
      '<div class="pitwall-scroll"><div class="pitwall-detail"></div><div class="pitwall-log"></div></div></div>';
    this.list = this.node.querySelector('.pitwall-jobs') as HTMLElement;
    this.detail = this.node.querySelector('.pitwall-detail') as HTMLElement;
    this.chart = this.node.querySelector('.pitwall-equity') as HTMLElement;
    this.box = this.node.querySelector('.pitwall-chart-box') as HTMLElement;
    this.handle = this.node.querySelector('.pitwall-resize') as HTMLElement;
    this.controls = this.node.querySelector('.pitwall-sweep-controls') as HTMLElement;
    this.scroller = this.node.querySelector('.pitwall-scroll') as HTMLElement;
    this.logView = this.node.querySelector('.pitwall-log') as HTMLElement;
    this.filter = this.node.querySelector('.pitwall-filter') as HTMLInputElement;
    this.sort = this.node.querySelector('.pitwall-sort') as HTMLSelectElement;
    this.list.addEventListener('click', event => void this.onClick(event));
    this.detail.addEventListener('click', event => void this.onClick(event));
    this.filter.addEventListener('input', () => this.renderList());
    this.sort.addEventListener('change', () => this.renderList());
    this.controls.addEventListener('change', () => this.onChoice());
    this.handle.addEventListener('pointerdown', event => this.resizeBy(event));
    // Plotly sizes a chart when it draws it; the box changes with the sidebar and the handle.
    this.resizer = new ResizeObserver(() => this.relayout());
    this.resizer.observe(this.box);
  }

  dispose(): void {
    this.resizer.disconnect();
    super.dispose();
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
    this.select(id);
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
    const html = this.visible()
      .map(job => {
        const live = !TERMINAL.has(job.status);
        const progress = Math.max(job.progress ?? 0, live ? this.liveProgress.get(job.id) ?? 0 : 0);
        const pct = Math.round(progress * 100);
        const failed = job.status === 'FAILED' || job.status === 'TIMED_OUT';
        const actions = [
          live ? `<button data-action="cancel" data-id="${job.id}">Cancel</button>` : '',
          job.status === 'COMPLETED' && job.kind !== 'sweep' ? `<button data-action="report" data-id="${job.id}">Report</button>` : '',
          failed ? `<button data-action="log" data-id="${job.id}">Log</button>` : '',
          TERMINAL.has(job.status) ? `<button data-action="rerun" data-id="${job.id}">Rerun</button>` : ''
        ].join('');
        const slot = this.pair.indexOf(job.id);
        const cls = (job.id === this.selected ? ' pitwall-selected' : '') + (slot >= 0 ? ' pitwall-comparing' : '');
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
        const kind =
          job.kind === 'sweep'
            ? '<span class="pitwall-kind">sweep</span>'
            : job.parent_id
              ? `<span class="pitwall-kind" title="a run of sweep ${job.parent_id}">sweep ${job.parent_id.slice(0, 8)}</span>`
              : '';
        const meta =
          `<div class="pitwall-meta">${kind}${name}<span>${escape(universeText(job))}</span>` +
          `<span>${escape(job.spec.start)}→${escape(job.spec.end)}</span>` +
          `<span class="pitwall-params">${escape(paramsText(job))}</span>` +
          `<span title="submitted">${shortTime(job.created_at)}</span><span title="duration">${duration(job)}</span></div>`;
        return (
          `<div class="pitwall-job${cls}" data-id="${job.id}">${this.comparePick(job, slot)}<span class="pitwall-id">${job.id.slice(0, 8)}</span>` +
          `<span class="pitwall-status" data-status="${job.status}" data-audit="${audit}">${job.status}</span>${badge}${warn}` +
          `<progress max="100" value="${pct}"></progress><span class="pitwall-actions">${actions}</span>${meta}</div>`
        );
      })
      .join('');
    // Rebuilt only when it changed: each poll would otherwise replace every row under the
    // researcher's pointer (a click, a hover, a checkbox being ticked).
    if (html !== this.listHtml) {
      this.listHtml = html;
      this.list.innerHTML = html;
    }
  }

  /** A completed run's "compare" tick, and its letter (A or B) once ticked. */
  private comparePick(job: JobRow, slot: number): string {
    if (job.status !== 'COMPLETED' || job.kind === 'sweep') {
      return '';
    }
    return (
      `<input type="checkbox" class="pitwall-compare-pick" data-action="compare" data-id="${job.id}" ` +
      `title="Compare this run with another"${slot >= 0 ? ' checked' : ''}/>` +
      (slot >= 0 ? `<span class="pitwall-compare-tag">${'AB'[slot]}</span>` : '')
    );
  }

  private async renderDetail(): Promise<void> {
    const pair = this.compared();
    if (pair) {
      await this.renderCompare(pair[0], pair[1]);
      return;
    }
    const job = this.jobs.find(j => j.id === this.selected);
    if (!job) {
      this.detail.innerHTML = '';
      this.showControls(null);
      this.stopLive();
      return;
    }
    if (job.kind === 'sweep') {
      await this.renderSweep(job);
      return;
    }
    this.showControls(null);
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
      (TERMINAL.has(job.status) ? `<button data-action="log" data-id="${job.id}">Log</button>` : '') +
      (job.parent_id
        ? `<button data-action="select" data-id="${job.parent_id}" title="back to its sweep">Sweep ${job.parent_id.slice(0, 8)}</button>`
        : '');
    const unfolded = this.unfolded(job.id);
    this.detail.innerHTML =
      `<h4>${job.id}</h4><p class="pitwall-detail-status" data-status="${job.status}" data-audit="${auditOf(job)}">` +
      `${job.status}${job.notebook ? ' · ' + escape(job.notebook) : ''}</p>${reason}${verdict}${costs}` +
      `<div class="pitwall-detail-actions">${buttons}</div>${metrics}` +
      `<div class="pitwall-tearsheet-slot">${this.sheets.get(job.id) ?? ''}</div>`;
    this.unfold(unfolded);
    if (job.status === 'COMPLETED' && !this.sheets.has(job.id)) {
      void this.loadTearSheet(job.id);
    }
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
        if (this.plotted === job.id) {
          await this.draw(() => this.plot(points.ts, points.equity, 'final'));
        }
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

  /** The folded sections (a tear sheet, a walk-forward) the researcher opened in the detail
   * while it shows `id`: they stay open when the list's refresh renders it again. */
  private unfolded(id: string): string[] {
    if (this.detail.querySelector('h4')?.textContent !== id) {
      return [];
    }
    return Array.from(this.detail.querySelectorAll('details[open]')).map(d => d.classList[0]);
  }

  private unfold(classes: string[]): void {
    for (const name of classes) {
      this.detail.querySelector(`details.${name}`)?.setAttribute('open', '');
    }
  }

  /** Fetch a completed run's tear sheet (written with its report, just after the commit) and
   * show it under the metrics while the run is still the one shown. */
  private async loadTearSheet(id: string): Promise<void> {
    this.sheets.set(id, '');
    let shown: string;
    try {
      shown = tearSheetHtml(await requestAPI<TearSheet>(`artifacts/${id}/tearsheet.json`));
    } catch {
      this.sheets.delete(id); // not there yet (the report follows the commit): asked again
      return;
    }
    this.sheets.set(id, shown);
    const slot = this.detail.querySelector('.pitwall-tearsheet-slot');
    if (this.selected === id && slot) {
      slot.innerHTML = shown;
    }
  }

  /** The two ticked runs, A and B, while both are listed and completed; else null. */
  private compared(): [JobRow, JobRow] | null {
    const find = (id: string) => this.jobs.find(j => j.id === id && j.status === 'COMPLETED');
    this.pair = this.pair.filter(id => find(id) !== undefined);
    return this.pair.length === 2 ? [find(this.pair[0]) as JobRow, find(this.pair[1]) as JobRow] : null;
  }

  /** Runs A and B side by side: their metrics and B − A, and both equity curves. */
  private async renderCompare(a: JobRow, b: JobRow): Promise<void> {
    this.stopLive();
    this.showControls(null);
    this.hideLog();
    this.detail.innerHTML = compareHead(a, b) + compareTable(a, b);
    const key = `compare:${a.id}:${b.id}`;
    if (this.plotted === key) {
      return;
    }
    this.plotted = key;
    try {
      const [pa, pb] = await Promise.all([a, b].map(job => requestAPI<EquityPoints>(`equity/${job.id}`)));
      if (this.plotted === key) {
        await this.draw(() => this.plotData(compareTraces(a, pa, b, pb), COMPARE_LAYOUT, 'compare'));
      }
    } catch (error) {
      this.plotted = null; // tried again at the next poll
      this.detail.insertAdjacentHTML('afterbegin', `<p class="pitwall-reason">No equity curves: ${escape(String(error))}</p>`);
    }
  }

  /** A sweep: its results table, and a heatmap of the chosen metric over two parameters. */
  private async renderSweep(job: JobRow): Promise<void> {
    this.stopLive();
    this.hideLog();
    // Read again only when the sweep or one of its runs moved (the list polls each second).
    const stamp = [job.status, job.progress, ...this.jobs.filter(j => j.parent_id === job.id).map(j => j.status)].join();
    let results: SweepResults;
    if (this.sweepCache?.id === job.id && this.sweepCache.stamp === stamp) {
      results = this.sweepCache.body;
    } else {
      try {
        results = await requestAPI<SweepResults>(`api/v1/sweeps/${encodeURIComponent(job.id)}`);
      } catch (error) {
        this.detail.innerHTML = `<h4>${job.id}</h4><p class="pitwall-reason">Cannot read the sweep: ${escape(String(error))}</p>`;
        return;
      }
      this.sweepCache = { id: job.id, stamp, body: results };
      if (this.selected !== job.id || this.pair.length === 2) {
        return; // another job (or a comparison) was chosen meanwhile
      }
    }
    const params = gridParams(results.rows);
    this.sweepChoice = choose(params, this.sweepChoice);
    this.showControls(params, this.sweepChoice);
    const unfolded = this.unfolded(job.id);
    this.detail.innerHTML =
      sweepHead(results) + '<p class="pitwall-note">Click a cell of the chart or a row to open that run.</p>' + sweepTable(results, params);
    this.unfold(unfolded);
    const chart = sweepChart(results.rows, this.sweepChoice);
    const key = `sweep:${job.id}:${JSON.stringify(chart)}`;
    if (this.plotted !== key) {
      this.plotted = key;
      await this.draw(() => this.plotData(chart.data, chart.layout, 'sweep'));
    }
  }

  /** The sweep's pickers (metric, x, y), or none (null); rebuilt only when they change. */
  private showControls(params: string[] | null, choice?: SweepChoice): void {
    const key = params && choice ? JSON.stringify([params, choice]) : '';
    if (key === this.controlsKey) {
      return;
    }
    this.controlsKey = key;
    this.controls.hidden = key === '';
    this.controls.innerHTML = params && choice ? controlsHtml(params, choice) : '';
  }

  private onChoice(): void {
    const pick = (cls: string) => (this.controls.querySelector(cls) as HTMLSelectElement | null)?.value ?? null;
    this.sweepChoice = {
      metric: (pick('.pitwall-sweep-metric') ?? 'sharpe') as keyof Metrics,
      x: pick('.pitwall-sweep-x') ?? '',
      y: pick('.pitwall-sweep-y')
    };
    void this.renderDetail();
  }

  private hideLog(): void {
    if (this.logShown !== null) {
      this.logShown = null;
      this.logView.innerHTML = '';
    }
  }

  /** Select a job: its detail replaces a comparison on screen (the ticks are cleared). */
  private select(id: string): void {
    if (id !== this.selected) {
      this.scroller.scrollTop = 0; // a new job's detail is read from its head
    }
    this.selected = id;
    if (this.pair.length === 2) {
      this.pair = [];
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
    await this.plotData([{ x, y, type: 'scatter', mode: 'lines', name: 'equity' }], LAYOUT, kind);
  }

  /** Draw into the chart box (shown first, so Plotly measures its real size). */
  private async plotData(data: object[], layout: object, kind: string): Promise<void> {
    this.showChart(true);
    this.chart.dataset.plot = kind;
    // A copy: Plotly writes its computed ranges into the layout it is given.
    const fresh = JSON.parse(JSON.stringify(layout)) as Partial<Plotly.Layout>;
    const gd = await Plotly.react(this.chart, data as Plotly.Data[], fresh, CONFIG);
    gd.removeAllListeners('plotly_click');
    if (kind === 'sweep') {
      // A heatmap cell (or a bar) carries its child's job id: a click opens that run.
      gd.on('plotly_click', event => {
        const id = event.points[0]?.customdata;
        if (typeof id === 'string') {
          this.select(id);
          void this.refresh();
        }
      });
    }
  }

  private clearChart(): void {
    delete this.chart.dataset.plot;
    Plotly.purge(this.chart);
    this.showChart(false);
  }

  private showChart(visible: boolean): void {
    this.box.hidden = !visible;
    this.handle.hidden = !visible;
  }

  /** Fit the chart to its box again (the box was resized, or the sidebar was). */
  private relayout(): void {
    if (this.box.hidden || this.box.clientWidth === 0 || !this.chart.dataset.plot) {
      return;
    }
    void this.draw(() => Plotly.Plots.resize(this.chart));
  }

  /** Drag the handle under the chart to make the chart taller or shorter. */
  private resizeBy(down: PointerEvent): void {
    down.preventDefault();
    const start = this.box.getBoundingClientRect().height;
    // Some of the detail stays visible under the chart, however far it is dragged.
    const max = Math.min(MAX_CHART, start + this.scroller.getBoundingClientRect().height - MIN_DETAIL);
    this.handle.setPointerCapture(down.pointerId);
    const move = (event: PointerEvent) => {
      const height = Math.min(max, Math.max(MIN_CHART, start + event.clientY - down.clientY));
      this.box.style.height = `${Math.round(height)}px`;
    };
    const up = () => {
      this.handle.removeEventListener('pointermove', move);
      this.handle.removeEventListener('pointerup', up);
      this.handle.removeEventListener('pointercancel', up);
    };
    this.handle.addEventListener('pointermove', move);
    this.handle.addEventListener('pointerup', up);
    this.handle.addEventListener('pointercancel', up);
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
    const action = target.dataset.action;
    if (action === 'uncompare') {
      this.pair = [];
      await this.refresh();
      return;
    }
    // A list row, a button, or a row of the sweep's table: each carries its job's id.
    const id = target.dataset.id ?? (target.closest('[data-id]') as HTMLElement | null)?.dataset.id;
    if (!id) {
      return;
    }
    try {
      if (action === 'compare') {
        // Tick A, then B; a third tick replaces A (the last two ticked are compared).
        this.pair = this.pair.includes(id) ? this.pair.filter(p => p !== id) : [...this.pair, id].slice(-2);
      } else if (action === 'cancel') {
        await requestAPI(`api/v1/backtests/${id}/cancel`, { method: 'POST' });
      } else if (action === 'report') {
        this.select(id);
        this.host.openFile(id, 'report');
      } else if (action === 'log') {
        this.select(id);
        await this.showLog(id);
      } else if (action === 'rerun') {
        const body = await requestAPI<{ id: string }>(`rerun/${id}`, { method: 'POST' });
        this.select(body.id);
      } else {
        this.select(id);
      }
    } catch (error) {
      await showErrorMessage('Pitwall', String(error));
    }
    await this.refresh();
  }
}
