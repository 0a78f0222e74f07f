/**
 * HTML for the pages, escaped by construction: `html` is a tagged template whose interpolated values are escaped
 * unless they are themselves Html (made by `html` or, for fixed markup only, `raw`). Arrays are joined, and
 * null, undefined and false render as nothing, so a page is written as one template without string concatenation
 * of untrusted text. Order fields (patient name, MRN, accession, procedure text) come from the EMR and are
 * untrusted.
 */

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

/** Escapes text for HTML element content and (double- or single-quoted) attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`]/g, (c) => ESCAPES[c] as string);
}

export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

export type HtmlValue = Html | string | number | boolean | null | undefined | readonly HtmlValue[];

function render(v: HtmlValue): string {
  if (v === null || v === undefined || v === false) return '';
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return v.map(render).join('');
  return escapeHtml(String(v));
}

export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): Html {
  let out = strings[0] ?? '';
  for (let i = 0; i < values.length; i++) out += render(values[i] as HtmlValue) + (strings[i + 1] ?? '');
  return new Html(out);
}

/** Markup written in this code, never text from outside. */
export function raw(markup: string): Html {
  return new Html(markup);
}
