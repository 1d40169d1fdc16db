import { Widget } from '@lumino/widgets';
import { BacktestSpec } from './models';

export interface Defaults {
  dataset: string;
  symbols: string[];
  start: string;
  end: string;
  params: { [key: string]: unknown };
}

function field(label: string, name: string, value: string, type = 'text'): string {
  const safe = value.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
  return `<label class="pitwall-field">${label}<input name="${name}" type="${type}" value="${safe}"></label>`;
}

/** The body of the Run Backtest dialog: dataset, universe, dates, capital, costs, engine, params. */
export class SpecForm extends Widget {
  constructor(defaults: Defaults) {
    super();
    this.addClass('pitwall-spec-form');
    this.node.innerHTML = [
      field('Dataset', 'dataset', defaults.dataset),
      field('Symbols (comma-separated)', 'symbols', defaults.symbols.join(',')),
      field('Start', 'start', defaults.start, 'date'),
      field('End', 'end', defaults.end, 'date'),
      field('Capital', 'capital', '1000000', 'number'),
      field('Commission (bps)', 'commission_bps', '0', 'number'),
      '<label class="pitwall-field">Engine<select name="engine">' +
        '<option value="vectorized">vectorized</option><option value="event">event</option>' +
        '</select></label>',
      '<label class="pitwall-field">Parameters (JSON)<textarea name="params" rows="3">' +
        JSON.stringify(defaults.params).replace(/</g, '&lt;') +
        '</textarea></label>'
    ].join('');
  }

  private value(name: string): string {
    const el = this.node.querySelector(`[name="${name}"]`) as HTMLInputElement | null;
    return el ? el.value.trim() : '';
  }

  /** The spec the form describes; throws an Error naming the field that is wrong. */
  getValue(): BacktestSpec {
    let params: { [key: string]: any };
    try {
      params = JSON.parse(this.value('params') || '{}');
    } catch (error) {
      throw new Error(`Parameters must be a JSON object: ${error}`);
    }
    return {
      dataset: this.value('dataset'),
      universe: this.value('symbols').split(',').map(s => s.trim()).filter(s => s.length > 0),
      start: this.value('start'),
      end: this.value('end'),
      capital: Number(this.value('capital')),
      costs: { commission_bps: Number(this.value('commission_bps')) },
      engine: this.value('engine') as BacktestSpec['engine'],
      params
    };
  }
}
