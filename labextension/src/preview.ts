/** The preview of a notebook's bundle, as the server extension plans it (docs/notebooks.md). */

export interface CellPreview {
  index: number;
  id: string | null;
  role: string;
  reason: string;
  lines: number[][];
  names: string[];
}

export interface BundlePlan {
  strategy: string;
  kind: 'vectorized' | 'event';
  params: { [key: string]: unknown };
  unresolved: string[];
  cells: CellPreview[];
  docs: string;
}

const IN_ROLES = new Set(['strategy', 'dependency']);

function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** HTML of the preview: the strategy and engine, then every code cell, in or out, and why. */
export function previewHtml(plan: BundlePlan): string {
  const rows = plan.cells
    .filter(cell => cell.role !== 'markdown' && cell.role !== 'raw')
    .map(cell => {
      const inside = IN_ROLES.has(cell.role);
      const mark = inside ? '✔' : '✘';
      return (
        `<li class="pitwall-preview-cell" data-role="${escape(cell.role)}" data-in="${inside}"` +
        (inside ? '>' : ' style="opacity: 0.6">') +
        `<span class="pitwall-preview-mark">${mark}</span> cell ${cell.index + 1}: ` +
        `<b>${escape(cell.role)}</b> — ${escape(cell.reason)}</li>`
      );
    })
    .join('');
  const unresolved = plan.unresolved.length
    ? `<div class="pitwall-preview-warning">Defined in no cell: ${escape(plan.unresolved.join(', '))}</div>`
    : '';
  return (
    '<div class="pitwall-preview" style="flex: none; max-height: 11em; overflow: auto; margin-bottom: 6px; ' +
    'padding: 4px; border: 1px solid var(--jp-border-color2)">' +
    `<div class="pitwall-preview-head">Runs <code>${escape(plan.strategy)}</code> ` +
    `(${escape(plan.kind)} engine), whatever cell is active. Cells that go in (✔):</div>` +
    `<ul style="margin: 2px 0; padding-left: 4px; list-style: none">${rows}</ul>${unresolved}` +
    `<div class="pitwall-preview-docs">The rule and the cell tags (pitwall:skip, pitwall:params, ` +
    `pitwall:strategy): ${escape(plan.docs)}</div></div>`
  );
}
