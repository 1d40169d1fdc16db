import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog, showErrorMessage, ToolbarButton } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { CommandRegistry } from '@lumino/commands';
import { Defaults, SpecForm } from './dialog';
import { PitwallError, requestAPI } from './handler';
import { BacktestsPanel } from './panel';

const RUN = 'pitwall:run-backtest';

class RunButton implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel> {
  constructor(private readonly commands: CommandRegistry) {}

  createNew(panel: NotebookPanel): IDisposable {
    const button = new ToolbarButton({
      className: 'pitwall-run-button',
      label: 'Run Backtest',
      tooltip: 'Bundle the cells up to the active one and run them as a backtest',
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
  const payload = { notebook: notebook.model.toJSON(), active_cell: notebook.content.activeCellIndex };
  const defaults = await requestAPI<Defaults>('defaults', { method: 'POST', body: JSON.stringify(payload) });
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
    const panel = new BacktestsPanel();
    app.shell.add(panel, 'right', { rank: 900 });
    app.commands.addCommand(RUN, {
      label: 'Run Backtest',
      caption: 'Run the notebook (cells up to the active one) as a Pitwall backtest',
      isEnabled: () => tracker.currentWidget !== null,
      execute: () => runBacktest(tracker, panel, app.shell)
    });
    palette.addItem({ command: RUN, category: 'Pitwall' });
    app.docRegistry.addWidgetExtension('Notebook', new RunButton(app.commands));
  }
};

export default plugin;
