import { Widget } from '@lumino/widgets';
import { BacktestSpec, Costs } from './models';

type CostsPreset = NonNullable<BacktestSpec['costs_preset']>;
/** The presets of `pitwall.models.COSTS_PRESETS`. */
const COSTS_PRESETS: CostsPreset[] = ['frictionless', 'retail', 'institutional'];
/** The numeric `Costs` fields the form takes. */
const COST_FIELDS = [
  'commission_bps',
  'commission_per_share',
  'spread_bps',
  'slippage_bps',
  'borrow_bps'
] as const;
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
      '<label class="pitwall-field">Preset<select name="costs_preset">' +
        '<option value="" selected>the deployment\'s default (retail unless configured)</option>' +
        COSTS_PRESETS.map(name => `<option value="${name}">${name}</option>`).join('') +
        '</select></label>',
      field('Commission (bps)', 'commission_bps', '', 'number'),
      field('Commission ($/share)', 'commission_per_share', '', 'number'),
      field('Spread (bps)', 'spread_bps', '', 'number'),
      '<label class="pitwall-field">Spread model<select name="spread_model">' +
        '<option value="" selected>the preset\'s (fixed)</option>' +
        '<option value="fixed">fixed (half of the spread in bps)</option>' +
        '<option value="range">range (half the fill bar\'s high - low)</option>' +
        '</select></label>',
      field('Slippage (bps)', 'slippage_bps', '', 'number'),
      field('Borrow (bps a year, on shorts)', 'borrow_bps', '', 'number'),
      '<p class="pitwall-note">A blank cost is the preset\'s; the preset is the ' +
        'deployment\'s default unless chosen (frictionless: no costs). A run trading ' +
        'over 100x a year with no costs is flagged as meaningless.</p>',
      '</fieldset>'
    ].join('');
  }

  private value(name: string): string {
    const el = this.node.querySelector(`[name="${name}"]`) as HTMLInputElement | null;
    return el ? el.value.trim() : '';
  }

  /** A numeric field; empty is undefined (not sent: the preset's value), anything else
   * not a number >= 0 is refused by name. */
  private number(name: string): number | undefined {
    const text = this.value(name);
    if (text === '') {
      return undefined;
    }
    const value = Number(text);
    if (!Number.isFinite(value) || value < 0) {
      throw new Error(`${name.replace(/_/g, ' ')} must be a number >= 0, got "${text}"`);
    }
    return value;
  }

  /** The costs the form sets: only the fields filled in, so the preset gives the rest
   * (a field sent as 0 would override the preset's value; docs/engine-conventions.md §2.3). */
  private costs(): Costs {
    const costs: Costs = {};
    for (const name of COST_FIELDS) {
      const value = this.number(name);
      if (value !== undefined) {
        costs[name] = value;
      }
    }
    const model = this.value('spread_model');
    if (model === 'fixed' || model === 'range') {
      costs.spread_model = model;
    }
    return costs;
  }

  /** The spec the form describes; throws an Error naming the field that is wrong. */
  getValue(): BacktestSpec {
    let params: { [key: string]: any };
    try {
      params = JSON.parse(this.value('params') || '{}');
    } catch (error) {
      throw new Error(`Parameters must be a JSON object: ${error}`);
    }
    const spec: BacktestSpec = {
      dataset: this.value('dataset'),
      universe: this.value('symbols').split(',').map(s => s.trim()).filter(s => s.length > 0),
      start: this.value('start'),
      end: this.value('end'),
      capital: Number(this.value('capital')),
      costs: this.costs(),
      engine: (this.value('engine') || this.defaults.plan.kind) as BacktestSpec['engine'],
      params
    };
    const preset = this.value('costs_preset');
    if ((COSTS_PRESETS as string[]).includes(preset)) {
      // Left out when not chosen: the deployment's default preset applies.
      spec.costs_preset = preset as CostsPreset;
    }
    return spec;
  }
}
