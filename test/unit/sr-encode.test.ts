import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ResultContext } from '../../src/results/context.js';
import { encodeSeg, lesionModel, NoSegError, SEGMENTATION_STORAGE, segUids } from '../../src/results/seg/encode.js';
import { COMPREHENSIVE_SR_STORAGE, encodeSr, SR_SERIES_DESCRIPTION, srUids } from '../../src/results/sr/encode.js';
import { assertDciodvfyClean } from '../helpers/dciodvfy.js';
import { syntheticResult } from '../helpers/result-context.js';

interface PyItem {
  rel: string;
  type: string;
  name?: string;
  value?: string | number;
  unit?: string;
  refs?: { sopClass: string; sop: string; segments: number[] };
  continuity?: string;
  children?: PyItem[];
}
interface PySr {
  sopClassUid: string;
  sopInstanceUid: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  transferSyntax: string;
  modality: string;
  seriesDescription: string;
  patientId: string;
  accessionNumber: string;
  completionFlag: string;
  verificationFlag: string;
  preliminaryFlag: string;
  contentDate: string;
  contentTime: string;
  template: string[];
  placerOrderNumber: string;
  evidence: { study: string; series: string; instances: string[] }[];
  hasPixelData: boolean;
  root: PyItem;
}

let dir = '';
let count = 0;

/** Writes the SR to a temp file, fails on any dciodvfy "Error" line, and returns what pydicom reads from it. */
function validate(bytes: Uint8Array): PySr {
  const path = join(dir, `sr-${++count}.dcm`);
  writeFileSync(path, bytes);
  assertDciodvfyClean(path, /ComprehensiveSR/);
  const json = execFileSync('/usr/bin/python3', ['test/helpers/sr-check.py', path], { encoding: 'utf8', maxBuffer: 1 << 26 });
  return (JSON.parse(json) as Record<string, PySr>)[path] as PySr;
}

/** The children of a node named `name` ("scheme:value:meaning" or its "scheme:value" start). */
function all(node: PyItem, name: string): PyItem[] {
  return (node.children ?? []).filter((c) => c.name === name || c.name?.startsWith(`${name}:`));
}
function one(node: PyItem, name: string): PyItem {
  const found = all(node, name);
  assert.equal(found.length, 1, `one "${name}" under "${node.name}" (found ${found.length})`);
  return found[0] as PyItem;
}
/** The laterality a NUM's finding-site modifier names, or undefined for the whole lung. */
function sideOf(n: PyItem): string | undefined {
  const site = all(n, 'SCT:363698007')[0];
  if (!site) return undefined;
  assert.equal(site.value, 'SCT:39607008:Lung');
  return one(site, 'SCT:272741003').value as string;
}
/** The NUM values of a concept by side: { total, 'SCT:7771000:Left', 'SCT:24028007:Right' } with their units. */
function nums(group: PyItem, name: string): Record<string, { value: number; unit: string }> {
  return Object.fromEntries(all(group, name).map((n) => [sideOf(n) ?? 'total', { value: n.value as number, unit: n.unit as string }]));
}

const LEFT = 'SCT:7771000:Left';
const RIGHT = 'SCT:24028007:Right';

function assertHeader(py: PySr, ctx: ResultContext) {
  assert.equal(py.sopClassUid, COMPREHENSIVE_SR_STORAGE);
  assert.equal(py.transferSyntax, '1.2.840.10008.1.2.1');
  assert.equal(py.modality, 'SR');
  assert.equal(py.seriesDescription, SR_SERIES_DESCRIPTION);
  assert.equal(py.studyInstanceUid, ctx.study.studyInstanceUid);
  assert.equal(py.patientId, ctx.study.patientId);
  assert.equal(py.accessionNumber, ctx.study.accessionNumber);
  assert.equal(py.placerOrderNumber, ctx.order.placerOrderNumber);
  assert.equal(py.verificationFlag, 'UNVERIFIED');
  assert.equal(py.preliminaryFlag, 'PRELIMINARY');
  assert.equal(py.contentDate, '20261127');
  assert.equal(py.contentTime, '100000');
  assert.deepEqual(py.template, ['DCMR:1500']);
  assert.equal(py.hasPixelData, false);
  const uids = srUids(ctx.series.seriesInstanceUid, ctx.analysis.models);
  assert.equal(py.seriesInstanceUid, uids.seriesInstanceUid);
  assert.equal(py.sopInstanceUid, uids.sopInstanceUid);

  const root = py.root;
  assert.equal(root.type, 'CONTAINER');
  assert.equal(root.name, 'DCM:126000:Imaging Measurement Report');
  assert.equal(one(root, 'DCM:121049').value, 'RFC5646:en-US:English (United States)');
  assert.equal(one(root, 'DCM:121005').value, 'DCM:121007:Device');
  assert.equal(one(root, 'DCM:121013').value, 'lung-threshold@1.0.0, lesion-unetpp@0.1.0, covid-resnet@0.1.0');
  assert.equal(one(root, 'DCM:121014').value, 'ctgate');
  assert.equal(one(root, 'DCM:121058').value, 'LN:24627-2:CT Chest');
  // Image Library: every slice of the analysed CT series, with modality and frame of reference.
  const group = one(one(root, 'DCM:111028'), 'DCM:126200');
  assert.equal(one(group, 'DCM:121139').value, 'DCM:CT:Computed Tomography');
  assert.equal(one(group, 'DCM:112227').value, ctx.series.frameOfReferenceUid);
  assert.deepEqual(
    all(group, 'SCT:260753009').map((i) => i.refs?.sop),
    ctx.series.slices.map((s) => s.sopInstanceUid),
  );
  assert.ok(all(group, 'SCT:260753009').every((i) => i.refs?.sopClass === ctx.series.sopClassUid));
}

describe('DICOM SR (TID 1500 measurement report) encoder', () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ctgate-sr-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes a report that dciodvfy accepts, with the findings as pydicom reads them and a reference to SEG segment 1', () => {
    const { context } = syntheticResult({ seed: 7, kind: 'covid' });
    const seg = encodeSeg(context);
    const sr = encodeSr(context, seg);
    const py = validate(sr.bytes);
    assertHeader(py, context);
    assert.equal(py.completionFlag, 'COMPLETE');
    assert.equal(sr.completionFlag, 'COMPLETE');
    assert.equal(sr.seriesInstanceUid, py.seriesInstanceUid);

    const f = context.analysis.findings;
    assert.ok(f && f.lesionCount > 0 && f.bilateral, 'the covid phantom has lesions in both lungs');
    const measurements = one(py.root, 'DCM:126010');
    const [lesions, classification] = all(measurements, 'DCM:125007') as [PyItem, PyItem];
    assert.equal(all(measurements, 'DCM:125007').length, 2);

    assert.equal(one(lesions, 'DCM:112039').value, 'AI lung lesions');
    assert.match(String(one(lesions, 'DCM:112040').value), /^2\.25\.\d+$/);
    assert.equal(one(lesions, 'DCM:121071').value, 'SCT:52988006:Lesion');
    assert.equal(one(lesions, 'SCT:363698007').value, 'SCT:39607008:Lung');
    assert.equal(one(lesions, 'DCM:111001').value, 'lesion-unetpp');
    assert.equal(one(lesions, 'DCM:111003').value, '0.1.0');
    // The reference names the SOP instance segUids gives for this series and lesion model, and segment 1.
    const segSop = segUids(context.series.seriesInstanceUid, lesionModel(context)).sopInstanceUid;
    assert.equal(seg.sopInstanceUid, segSop);
    const ref = one(lesions, 'DCM:121191');
    assert.equal(ref.type, 'IMAGE');
    assert.deepEqual(ref.refs, { sopClass: SEGMENTATION_STORAGE, sop: segSop, segments: [1] });
    assert.equal(one(lesions, 'DCM:121232').value, context.series.seriesInstanceUid);

    const ml = 'UCUM:ml:milliliter';
    const pct = 'UCUM:%:percent';
    assert.deepEqual(nums(lesions, 'SCT:118565006:Volume'), {
      total: { value: f.lesionVolumeMl, unit: ml },
      [LEFT]: { value: f.lesionVolumeMlBySide.left, unit: ml },
      [RIGHT]: { value: f.lesionVolumeMlBySide.right, unit: ml },
    });
    assert.deepEqual(nums(lesions, 'SCT:246206008:Number of lesions'), { total: { value: f.lesionCount, unit: 'UCUM:{lesions}:lesions' } });
    assert.deepEqual(nums(lesions, '99CTG:LUNGINV'), {
      total: { value: f.lungInvolvementPercent.total, unit: pct },
      [LEFT]: { value: f.lungInvolvementPercent.left, unit: pct },
      [RIGHT]: { value: f.lungInvolvementPercent.right, unit: pct },
    });
    assert.equal(one(lesions, 'SCT:272741003').value, 'SCT:51440002:Bilateral');

    assert.equal(one(classification, 'DCM:111001').value, 'covid-resnet');
    assert.deepEqual(nums(classification, '99CTG:PROB'), { total: { value: 0.93, unit: 'UCUM:1:no units' } });
    assert.deepEqual(nums(classification, '99CTG:THRESH'), { total: { value: 0.613, unit: 'UCUM:1:no units' } });
    // The ORU's impression code (a SNOMED CT US extension id, 18 digits: Long Code Value).
    assert.equal(one(classification, 'DCM:121073').value, 'SCT:882784691000119100:Pneumonia caused by SARS-CoV-2');
    assert.equal(all(py.root, 'UMLS:C0034375').length, 0);

    // Evidence: the CT series and the SEG, in the CT's study.
    assert.deepEqual(py.evidence, [
      { study: context.study.studyInstanceUid, series: context.series.seriesInstanceUid, instances: context.series.slices.map((s) => s.sopInstanceUid) },
      { study: context.study.studyInstanceUid, series: seg.seriesInstanceUid, instances: [segSop] },
    ]);
  });

  it('is deterministic: the same context gives the same bytes; another model version another series', () => {
    const a = syntheticResult({ seed: 7, kind: 'covid' }).context;
    const b = syntheticResult({ seed: 7, kind: 'covid' }).context;
    const first = encodeSr(a, encodeSeg(a));
    const second = encodeSr(b, encodeSeg(b));
    assert.deepEqual(Buffer.from(first.bytes), Buffer.from(second.bytes));
    b.analysis.models = b.analysis.models.map((m) => (m.name === 'covid-resnet' ? { ...m, version: '0.2.0' } : m));
    const third = encodeSr(b, encodeSeg(b));
    assert.notEqual(third.seriesInstanceUid, first.seriesInstanceUid);
    assert.notEqual(third.sopInstanceUid, first.sopInstanceUid);
  });

  it('without lesion (no SEG) still reports zero volume, no lesions and the impression, with no Referenced Segment', () => {
    const { context } = syntheticResult({ seed: 3, kind: 'healthy' });
    assert.throws(
      () => encodeSeg(context),
      (e: unknown) => e instanceof NoSegError && e.reason === 'no-lesion',
    );
    const py = validate(encodeSr(context, undefined).bytes);
    assertHeader(py, context);
    assert.equal(py.completionFlag, 'COMPLETE');
    const [lesions, classification] = all(one(py.root, 'DCM:126010'), 'DCM:125007') as [PyItem, PyItem];
    assert.equal(all(lesions, 'DCM:121191').length, 0);
    assert.equal(all(lesions, 'DCM:121232').length, 0);
    assert.equal(nums(lesions, 'SCT:118565006:Volume').total?.value, 0);
    assert.equal(nums(lesions, 'SCT:246206008:Number of lesions').total?.value, 0);
    assert.equal(all(lesions, 'SCT:272741003').length, 0, 'no laterality without lesion');
    assert.equal(one(classification, 'DCM:121073').value, 'SCT:281900007:No abnormality detected');
    assert.deepEqual(
      py.evidence.map((e) => e.series),
      [context.series.seriesInstanceUid],
    );
  });

  it('not assessable: PARTIAL, no measurements, the reason as text', () => {
    const { context } = syntheticResult({ seed: 7, kind: 'covid' });
    context.analysis = { ...context.analysis, verdict: 'not-assessable', reason: 'no lung found', probability: null, findings: null, lesionMask: null };
    const sr = encodeSr(context, undefined);
    assert.equal(sr.completionFlag, 'PARTIAL');
    const py = validate(sr.bytes);
    assertHeader(py, context);
    assert.equal(py.completionFlag, 'PARTIAL');
    assert.equal(all(py.root, 'DCM:126010').length, 0);
    const qualitative = one(py.root, 'UMLS:C0034375:Qualitative Evaluations');
    assert.deepEqual(qualitative.children, [{ rel: 'CONTAINS', type: 'TEXT', name: '99CTG:NOTASSESS:Reason not assessable', value: 'no lung found' }]);
    assert.throws(() => encodeSr(context, { seriesInstanceUid: '1.2.3', sopInstanceUid: '1.2.4' }), /not assessable/);
  });
});
