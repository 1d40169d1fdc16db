import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  IFrame,
  MainAreaWidget,
  showDialog,
  showErrorMessage,
  ToolbarButton
} from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { CommandRegistry } from '@lumino/commands';
import { Defaults, SpecForm } from './dialog';
import { pitwallUrl, PitwallError, requestAPI } from './handler';
import { BacktestsPanel } from './panel';

const RUN = 'pitwall:run-backtest';
const OPEN = 'pitwall:open-job-file';

/**
 * A job's report (or log) in a main-area tab: an iframe of the server extension's
 * `/pitwall/report/{id}` (Jupyter-relative, so a remote browser reaches it), sandboxed to
 * scripts only (the report's plotly.js runs; it gets no access to the lab's origin). The
 * server sends the same sandbox as a CSP, for a report opened outside the lab.
 */
function openJobFile(shell: JupyterFrontEnd.IShell, open: Map<string, MainAreaWidget<IFrame>>, id: string, file: 'report' | 'log'): void {
  const key = `${file}:${id}`;
  const existing = open.get(key);
  if (existing && !existing.isDisposed) {
    shell.activateById(existing.id);
    return;
  }
  const content = new IFrame({ sandbox: ['allow-scripts', 'allow-downloads', 'allow-popups'], referrerPolicy: 'no-referrer' });
  content.url = file === 'report' ? pitwallUrl(`report/${encodeURIComponent(id)}`) : pitwallUrl(`artifacts/${encodeURIComponent(id)}/log.txt`);
  content.addClass('pitwall-file-frame');
  const widget = new MainAreaWidget({ content });
  widget.id = `pitwall-${file}-${id}`;
  widget.addClass(`pitwall-${file}-tab`);
  widget.title.label = `${file === 'report' ? 'Report' : 'Log'} ${id.slice(0, 8)}`;
  widget.title.caption = `Pitwall ${file} of job ${id}`;
  widget.title.closable = true;
  widget.disposed.connect(() => open.delete(key));
  open.set(key, widget);
  shell.add(widget, 'main');
  shell.activateById(widget.id);
}

class RunButton implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel> {
  constructor(private readonly commands: CommandRegistry) {}

  createNew(panel: NotebookPanel): IDisposable {
    const button = new ToolbarButton({
      className: 'pitwall-run-button',
      label: 'Run Backtest',
      tooltip: "Run the notebook's strategy (and the cells it needs) as a backtest",
      onClick: () => void this.commands.execute(RUN)
    });
    panel.toolbar.insertItem(10, 'pitwallRunBacktest', button);
    return new DisposableDelegate(() => button.dispose());
  }
}

async function runBacktest(tracker: INotebookTracker, panel: BacktestsPanel, shell: JupyterFrontEnd.IShell): Promise<void> {
  const notebook = tracker.currentWidget;
  if (!notebook || !notebook.model) {
    await showErrorMessage('Run Backtest', 'Open a notebook first.');
    return;
  }
  // The notebook's path names the job in the panel and its cells in a failure's traceback.
  const payload = { notebook: notebook.model.toJSON(), path: notebook.context.path };
  let defaults: Defaults;
  try {
    // Also the bundle's preview; an ambiguous notebook is refused here, before any dialog.
    defaults = await requestAPI<Defaults>('defaults', { method: 'POST', body: JSON.stringify(payload) });
  } catch (error) {
    if (error instanceof PitwallError && error.cell !== null) {
      notebook.content.activeCellIndex = error.cell - 1;
    }
    await showErrorMessage('Backtest refused', error instanceof Error ? error.message : String(error));
    return;
  }
  const form = new SpecForm(defaults);
  const result = await showDialog({
    title: 'Run Backtest',
    body: form,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Run' })]
  });
  if (!result.button.accept) {
    return;
  }
  try {
    const spec = form.getValue();
    const body = await requestAPI<{ id: string }>('submit', {
      method: 'POST',
      body: JSON.stringify({ ...payload, spec })
    });
    panel.track(body.id);
    shell.activateById(panel.id);
  } catch (error) {
    if (error instanceof PitwallError && error.cell !== null) {
      notebook.content.activeCellIndex = error.cell - 1;
    }
    await showErrorMessage('Backtest refused', error instanceof Error ? error.message : String(error));
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'pitwall-labextension:plugin',
  description: 'Run Backtest button, Backtests panel',
  autoStart: true,
  requires: [INotebookTracker, ICommandPalette],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, palette: ICommandPalette) => {
    const tabs = new Map<string, MainAreaWidget<IFrame>>();
    app.commands.addCommand(OPEN, {
      label: 'Open Backtest Report',
      execute: args => openJobFile(app.shell, tabs, String(args.id), args.file === 'log' ? 'log' : 'report')
    });
    const panel = new BacktestsPanel({
      openFile: (id, file) => void app.commands.execute(OPEN, { id, file })
    });
    app.shell.add(panel, 'right', { rank: 900 });
    // The %%backtest widget's links (report, log) open as lab tabs too.
    document.addEventListener('click', event => {
      const link = (event.target as HTMLElement | null)?.closest?.('a[data-pitwall-open][data-job]') as HTMLAnchorElement | null;
      if (!link || event.ctrlKey || event.metaKey || event.shiftKey) {
        return;
      }
      event.preventDefault();
      const file = link.dataset.pitwallOpen === 'log' ? 'log' : 'report';
      void app.commands.execute(OPEN, { id: link.dataset.job ?? '', file });
    });
    app.commands.addCommand(RUN, {
      label: 'Run Backtest',
      caption: "Run the notebook's strategy as a Pitwall backtest",
      isEnabled: () => tracker.currentWidget !== null,
      execute: () => runBacktest(tracker, panel, app.shell)
    });
    palette.addItem({ command: RUN, category: 'Pitwall' });
    app.docRegistry.addWidgetExtension('Notebook', new RunButton(app.commands));
  }
};

export default plugin;
