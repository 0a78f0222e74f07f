/** DICOM DA (YYYYMMDD) and TM (HHMMSS) of an instant, without reading the clock. */
export interface DicomDateTime {
  date: string;
  time: string;
}

const ISO = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})$/;

/**
 * The date and time of an ISO 8601 instant with a zone (e.g. analysis.completedAt). Without `timeZone` it is the
 * wall-clock time written in the string (its own offset); with an IANA zone (the hospital's, where the CT's study
 * times are local times) it is the wall-clock time there. Either way the same input gives the same output.
 */
export function dicomDateTime(iso: string, timeZone?: string): DicomDateTime {
  const m = ISO.exec(iso);
  if (!m || Number.isNaN(Date.parse(iso))) throw new Error(`not an ISO 8601 date-time with a time zone: "${iso}"`);
  if (!timeZone) return { date: `${m[1]}${m[2]}${m[3]}`, time: `${m[4]}${m[5]}${m[6]}` };
  const parts = new Intl.DateTimeFormat('en-GB', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hourCycle: 'h23',
  }).formatToParts(new Date(iso));
  const get = (t: Intl.DateTimeFormatPartTypes) => parts.find((p) => p.type === t)?.value ?? '';
  return { date: `${get('year')}${get('month')}${get('day')}`, time: `${get('hour')}${get('minute')}${get('second')}` };
}
