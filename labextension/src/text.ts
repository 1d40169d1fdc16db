import { JobView } from './models';

/** Text for HTML: the panel builds its rows as strings, so every value goes through here. */
export function escape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A job's parameters as `name=value` pairs (JSON values), in the spec's order. */
export function paramsText(job: JobView): string {
  return paramPairs(job.spec.params ?? {});
}

/** Parameters as `name=value` pairs (JSON values), in their order. */
export function paramPairs(params: { [name: string]: unknown }): string {
  return Object.entries(params)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(' ');
}

/** A run as a researcher tells runs apart: its short id and its parameters. */
export function runLabel(job: JobView): string {
  const params = paramsText(job);
  return params ? `${job.id.slice(0, 8)} (${params})` : job.id.slice(0, 8);
}
