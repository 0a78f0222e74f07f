/**
 * What the /dicom-web proxy lets through: the DICOMweb path grammar (QIDO-RS, WADO-RS, STOW-RS) and nothing else.
 * The check works on the raw request target, before any decoding, so `..`, `%2e%2e`, `%2f`, backslashes, NUL and
 * absolute URLs never reach the PACS in any spelling.
 */

export const PROXY_PREFIX = '/dicom-web';

/**
 * A UID as DICOM defines it, or a UUID string: some archives publish studies under UUIDs (e.g. COVID-CT-MD), and
 * ctgate keeps source UIDs byte for byte, so its results sit in such a study and the viewer must reach them.
 */
export const UID_PATTERN = '(?:[0-9.]{1,64}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})';
const UID = UID_PATTERN;
const FRAMES = '\\d{1,6}(?:,\\d{1,6}){0,4095}';
const RENDER = '(?:/(?:rendered|thumbnail))?';
/** Bulk data as Orthanc names it (`…/bulk/7fe00010`, nested `…/bulk/00081115/1/0020000e`), and `bulkdata/…`. */
const BULK = '/(?:bulk|bulkdata)(?:/(?:[0-9a-fA-F]{8}|\\d{1,6})){1,32}';
const INSTANCE = `/instances/${UID}(?:${RENDER}|/metadata|/frames/${FRAMES}${RENDER}|${BULK})`;
const SERIES = `/series/${UID}(?:${RENDER}|/metadata|/instances|${INSTANCE})`;
const STUDY = `/studies/${UID}(?:${RENDER}|/metadata|/series|/instances|${SERIES})`;
/** Paths under /dicom-web: /studies, /series, /instances (QIDO over all) and everything below a study. */
const GRAMMAR = new RegExp(`^(?:/studies|/series|/instances|${STUDY})$`);
/** STOW-RS targets. */
const STOW = new RegExp(`^/studies(?:/${UID})?$`);

const MAX_QUERY = 8192;

export type Target = { ok: true; path: string; query: string; stow: boolean } | { ok: false; reason: string };

/**
 * Splits and checks a raw request target (`ctx.req.url`) under /dicom-web. `path` is what follows /dicom-web
 * (e.g. `/studies/1.2/series`), `query` the raw query string with its `?` (or ''), `stow` whether POST may go there.
 */
export function checkTarget(raw: string): Target {
  if (!raw.startsWith(`${PROXY_PREFIX}/`) && raw !== PROXY_PREFIX && !raw.startsWith(`${PROXY_PREFIX}?`)) {
    return { ok: false, reason: 'the request target must be a path under /dicom-web (no absolute URL)' };
  }
  const q = raw.indexOf('?');
  const path = (q < 0 ? raw : raw.slice(0, q)).slice(PROXY_PREFIX.length);
  const query = q < 0 ? '' : raw.slice(q);
  if (path.includes('..') || /%2e/i.test(path)) return { ok: false, reason: 'dot segments are not allowed in the path' };
  if (/%2f|%5c|\\/i.test(path)) return { ok: false, reason: 'encoded slashes and backslashes are not allowed in the path' };
  if (/%00|\0/.test(raw)) return { ok: false, reason: 'NUL is not allowed in the request target' };
  if (path.includes('%')) return { ok: false, reason: 'percent-encoding is not allowed in the path' };
  if (!GRAMMAR.test(path)) return { ok: false, reason: 'not a DICOMweb path (studies/series/instances/frames/metadata/rendered/thumbnail/bulkdata)' };
  if (query.length > MAX_QUERY) return { ok: false, reason: `query string longer than ${MAX_QUERY} characters` };
  // Raw control characters and spaces never pass Node's parser; '#' has no place in a request target.
  if (query.includes('#')) return { ok: false, reason: 'fragment in the request target' };
  return { ok: true, path, query, stow: STOW.test(path) };
}
