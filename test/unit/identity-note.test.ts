/** A result whose order's patient did not match the study (a sender rule in `warn` mode) says so in every output. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { identityNote, type ResultContext } from '../../src/results/context.js';
import { summaryHtml } from '../../src/results/fhir/summary.js';
import { encodeOru, oruControlId } from '../../src/results/oru/encode.js';
import { syntheticResult } from '../helpers/result-context.js';

const base = syntheticResult({ seed: 7, kind: 'covid' }).context;
const warned: ResultContext = { ...base, patientIdentityWarning: { differ: ['PatientID', 'PatientBirthDate'], notComparable: [] } };
const oru = (ctx: ResultContext) =>
  encodeOru(ctx, {
    sendingApplication: 'CTGATE',
    sendingFacility: 'RADIOLOGY',
    controlId: oruControlId(ctx.jobId),
    now: new Date('2026-12-04T10:00:00Z'),
    version: '2.5.1',
  });

describe('patient identity warning in the results', () => {
  it('names the fields, never their values', () => {
    const note = identityNote(warned) as string;
    assert.match(note, /^Patient identity NOT confirmed: .*\(different: PatientID, PatientBirthDate\)/);
    assert.ok(!note.includes(base.order.patient.birthDate ?? '\u0000'));
    assert.equal(identityNote(base), undefined);
  });
  it('puts it in the ORU as the first NTE and in the report summary as the first row', () => {
    const nte = oru(warned)
      .split('\r')
      .filter((s) => s.startsWith('NTE|'));
    assert.equal(nte.length, 1);
    assert.match(nte[0] as string, /^NTE\|1\|L\|Patient identity NOT confirmed/);
    assert.ok(!oru(base).includes('Patient identity NOT confirmed'));
    const html = summaryHtml(warned, 'conclusion');
    assert.match(html, /<table><tr><th>Patient identity<\/th><td>Patient identity NOT confirmed/);
    assert.ok(!summaryHtml(base, 'conclusion').includes('Patient identity'));
  });
});
