import { Widget } from '@lumino/widgets';
import { BacktestSpec } from './models';
import { BundlePlan, previewHtml } from './preview';

export interface Defaults {
  dataset: string;
  symbols: string[];
  start: string;
  end: string;
  params: { [key: string]: unknown };
  plan: BundlePlan;
}

function field(label: string, name: string, value: string, type = 'text'): string {
  const safe = value.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
  return `<label class="pitwall-field">${label}<input name="${name}" type="${type}" value="${safe}"></label>`;
}

/**
 * The body of the Run Backtest dialog: the preview of the cells that go in, then dataset,
 * universe, dates, capital, params, the engine (the strategy's kind) and every cost the
 * engine models, so the parameters sit above the fold.
 */
export class SpecForm extends Widget {
  constructor(private readonly defaults: Defaults) {
    super();
    this.addClass('pitwall-spec-form');
    this.node.innerHTML = [
      previewHtml(defaults.plan),
      field('Dataset', 'dataset', defaults.dataset),
      field('Symbols (comma-separated)', 'symbols', defaults.symbols.join(',')),
      field('Start', 'start', defaults.start, 'date'),
      field('End', 'end', defaults.end, 'date'),
      field('Capital', 'capital', '1000000', 'number'),
      '<label class="pitwall-field">Parameters (JSON)<textarea name="params" rows="3">' +
        JSON.stringify(defaults.params).replace(/</g, '&lt;') +
        '</textarea></label>',
      '<label class="pitwall-field">Engine (the strategy\'s kind)<select name="engine">' +
        ['vectorized', 'event']
          .map(kind => `<option value="${kind}"${kind === defaults.plan.kind ? ' selected' : ''}>${kind}</option>`)
          .join('') +
        '</select></label>',
      '<fieldset class="pitwall-costs"><legend>Costs</legend>',
      field('Commission (bps)', 'commission_bps', '0', 'number'),
      field('Commission ($/share)', 'commission_per_share', '0', 'number'),
      field('Spread (bps)', 'spread_bps', '0', 'number'),
      '<label class="pitwall-field">Spread model<select name="spread_model">' +
        '<option value="fixed" selected>fixed (half of the spread in bps)</option>' +
        '<option value="range">range (half the fill bar\'s high - low)</option>' +
        '</select></label>',
      field('Slippage (bps)', 'slippage_bps', '0', 'number'),
      field('Borrow (bps a year, on shorts)', 'borrow_bps', '0', 'number'),
      '<p class="pitwall-note">Costs default to zero; a run trading over 100x a year ' +
        'with no costs is flagged as meaningless.</p>',
      '</fieldset>'
    ].join('');
  }

  private value(name: string): string {
    const el = this.node.querySelector(`[name="${name}"]`) as HTMLInputElement | null;
    return el ? el.value.trim() : '';
  }

  /** A numeric field; empty counts as 0, anything else not a number is refused by name. */
  private number(name: string): number {
    const text = this.value(name);
    const value = text === '' ? 0 : Number(text);
    if (!Number.isFinite(value) || value < 0) {
      throw new Error(`${name.replace(/_/g, ' ')} must be a number >= 0, got "${text}"`);
    }
    return value;
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
      costs: {
        commission_bps: this.number('commission_bps'),
        commission_per_share: this.number('commission_per_share'),
        spread_bps: this.number('spread_bps'),
        spread_model: (this.value('spread_model') || 'fixed') as 'fixed' | 'range',
        slippage_bps: this.number('slippage_bps'),
        borrow_bps: this.number('borrow_bps')
      },
      engine: (this.value('engine') || this.defaults.plan.kind) as BacktestSpec['engine'],
      params
    };
  }
}
