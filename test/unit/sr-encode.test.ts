import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ResultContext, sourceSeriesKey } from '../../src/results/context.js';
import { encodeSeg, lesionModel, NoSegError, SEGMENTATION_STORAGE, segUids } from '../../src/results/seg/encode.js';
import { COMPREHENSIVE_3D_SR_STORAGE, encodeSr, SR_SERIES_DESCRIPTION, srUids, TRACKING_IDENTIFIER } from '../../src/results/sr/encode.js';
import { largestLesionOutline } from '../../src/results/sr/outline.js';
import { assertDciodvfyClean } from '../helpers/dciodvfy.js';
import { syntheticResult } from '../helpers/result-context.js';

interface PyItem {
  rel: string;
  type: string;
  name?: string;
  value?: string | number;
  unit?: string;
  refs?: { sopClass: string; sop: string; segments: number[] };
  graphicType?: string;
  points?: number[];
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
  assertDciodvfyClean(path, /Comprehensive3DSR/);
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
  assert.equal(py.sopClassUid, COMPREHENSIVE_3D_SR_STORAGE);
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
  const uids = srUids(sourceSeriesKey(ctx.series), ctx.analysis.models);
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

/** Even-odd rule: whether point (x, y) lies inside the closed polygon. */
function insidePolygon(points: number[], x: number, y: number): boolean {
  let inside = false;
  for (let i = 0, j = points.length - 4; i + 1 < points.length - 2; j = i, i += 2) {
    const [xi, yi, xj, yj] = [points[i], points[i + 1], points[j], points[j + 1]] as [number, number, number, number];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/**
 * The TID 1410 groups: one per key slice, in findings.keySlices order, each an Image Region (closed POLYLINE)
 * SELECTED FROM that CT slice, inside the image, around lesion pixels of that slice, with the area it encloses.
 */
function assertKeySliceGroups(planar: PyItem[], ctx: ResultContext) {
  const f = ctx.analysis.findings;
  const mask = ctx.analysis.lesionMask;
  assert.ok(f && mask);
  const [nx, ny] = ctx.series.geometry.size;
  const pixelMm2 = ctx.series.geometry.spacing[0] * ctx.series.geometry.spacing[1];
  const uids = new Set(ctx.series.slices.map((s) => s.sopInstanceUid));
  assert.equal(planar.length, f.keySlices.length);
  planar.forEach((g, i) => {
    const z = (f.keySlices[i] as { index: number }).index;
    const slice = ctx.series.slices[z];
    assert.ok(slice);
    assert.equal(one(g, 'DCM:121071').value, 'SCT:52988006:Lesion');
    assert.equal(one(g, 'DCM:111001').value, 'lesion-unetpp');
    assert.equal(one(g, 'DCM:111003').value, '0.1.0');
    const region = one(g, 'DCM:111030:Image Region');
    assert.equal(region.type, 'SCOORD');
    assert.equal(region.rel, 'CONTAINS');
    assert.equal(region.graphicType, 'POLYLINE');
    // Selected from a real slice of the series: the key slice itself.
    const from = region.children ?? [];
    assert.equal(from.length, 1);
    assert.equal(from[0]?.rel, 'SELECTED FROM');
    assert.equal(from[0]?.type, 'IMAGE');
    assert.ok(uids.has(from[0]?.refs?.sop as string));
    assert.deepEqual(from[0]?.refs, { sopClass: ctx.series.sopClassUid, sop: slice.sopInstanceUid, segments: [] });
    const pts = region.points ?? [];
    assert.ok(pts.length >= 10 && pts.length % 2 === 0, `a closed polygon (${pts.length / 2} points)`);
    assert.deepEqual(pts.slice(-2), pts.slice(0, 2), 'closed: the last point is the first');
    const lesionAt = (x: number, y: number) => x >= 0 && y >= 0 && x < nx && y < ny && mask[z * nx * ny + y * nx + x] !== 0;
    for (let k = 0; k < pts.length; k += 2) {
      const [x, y] = [pts[k] as number, pts[k + 1] as number];
      assert.ok(x >= 0 && x <= nx && y >= 0 && y <= ny, `point ${x},${y} inside the ${nx}×${ny} image`);
      // A vertex is a corner of a lesion pixel (the outline runs along the lesion's pixel edges).
      assert.ok(lesionAt(x, y) || lesionAt(x - 1, y) || lesionAt(x, y - 1) || lesionAt(x - 1, y - 1), `vertex ${x},${y} on the lesion`);
    }
    // The pixels whose centres it encloses are (nearly all) lesion, and the area is theirs.
    let enclosed = 0;
    let lesion = 0;
    for (let y = 0; y < ny; y++)
      for (let x = 0; x < nx; x++)
        if (insidePolygon(pts, x + 0.5, y + 0.5)) {
          enclosed++;
          if (lesionAt(x, y)) lesion++;
        }
    assert.ok(enclosed > 0 && lesion >= 0.9 * enclosed, `${lesion} of ${enclosed} enclosed pixels are lesion`);
    const area = one(g, 'SCT:42798000:Area');
    assert.equal(area.unit, 'UCUM:mm2:square millimeter');
    assert.ok(Math.abs((area.value as number) - enclosed * pixelMm2) < 0.01, `area ${area.value} mm2, ${enclosed} pixels`);
    assert.ok((area.value as number) <= (f.keySlices[i] as { lesionAreaMm2: number }).lesionAreaMm2 + 0.01, 'the largest lesion of the slice, not more');
  });
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
    const groups = all(measurements, 'DCM:125007');
    // The volumetric group, one planar ROI group per key slice, the classification.
    assert.equal(groups.length, 2 + f.keySlices.length);
    assert.ok(f.keySlices.length > 0);
    const lesions = groups[0] as PyItem;
    const classification = groups[groups.length - 1] as PyItem;
    // One finding: every group has the same tracking identifier and UID.
    const trackingUid = one(lesions, 'DCM:112040').value;
    for (const g of groups) {
      assert.equal(one(g, 'DCM:112039').value, TRACKING_IDENTIFIER);
      assert.equal(one(g, 'DCM:112040').value, trackingUid);
    }
    assertKeySliceGroups(groups.slice(1, -1), context);

    assert.equal(one(lesions, 'DCM:112039').value, 'AI lung lesions');
    assert.match(String(one(lesions, 'DCM:112040').value), /^2\.25\.\d+$/);
    assert.equal(one(lesions, 'DCM:121071').value, 'SCT:52988006:Lesion');
    assert.equal(one(lesions, 'SCT:363698007').value, 'SCT:39607008:Lung');
    assert.equal(one(lesions, 'DCM:111001').value, 'lesion-unetpp');
    assert.equal(one(lesions, 'DCM:111003').value, '0.1.0');
    // The reference names the SOP instance segUids gives for this series and lesion model, and segment 1.
    const segSop = segUids(sourceSeriesKey(context.series), lesionModel(context)).sopInstanceUid;
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
    // TID 4019: name, version and parameters, each HAS CONCEPT MOD of its group.
    assert.equal(one(classification, 'DCM:111003').value, '0.1.0');
    assert.equal(one(classification, 'DCM:111002').value, 'operating threshold 0.613');
    for (const g of groups) for (const c of [...all(g, 'DCM:111001'), ...all(g, 'DCM:111003'), ...all(g, 'DCM:111002')]) assert.equal(c.rel, 'HAS CONCEPT MOD');
    assert.equal(all(lesions, 'DCM:111002').length, 0);
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

  it('outlines the largest 4-connected lesion of a slice along its pixel edges, closed, holes inside', () => {
    // 6×5 slice: an L of 4 pixels with a diagonal neighbour (another 4-component), and a 3×3 ring with a hole.
    const rows = ['##....', '#..###', '.#.#.#', '...###', '......'];
    const mask = Uint8Array.from(rows.join('').split(''), (c) => (c === '#' ? 1 : 0));
    const o = largestLesionOutline(mask, [6, 5, 1], 0);
    assert.ok(o);
    assert.equal(o.pixels, 8);
    assert.equal(o.enclosedPixels, 9);
    assert.deepEqual(o.points, [3, 1, 6, 1, 6, 4, 3, 4, 3, 1]);
    const l = largestLesionOutline(
      Uint8Array.from('##.#..'.split(''), (c) => (c === '#' ? 1 : 0)),
      [6, 1, 1],
      0,
    );
    assert.deepEqual(l?.points, [0, 0, 2, 0, 2, 1, 0, 1, 0, 0]);
    assert.equal(largestLesionOutline(new Uint8Array(30), [6, 5, 1], 0), null);
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
    const groups = all(one(py.root, 'DCM:126010'), 'DCM:125007');
    assert.equal(groups.length, 2, 'no key slice, no planar ROI group');
    const [lesions, classification] = groups as [PyItem, PyItem];
    assert.equal(all(lesions, 'DCM:111030').length, 0);
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

  it('codes other opacity as a lung finding, never as COVID-19 pneumonia', () => {
    const { context } = syntheticResult({ seed: 9, kind: 'lobar-pneumonia' });
    assert.equal(context.analysis.category, 'other-opacity');
    context.analysis = { ...context.analysis, probability: context.analysis.threshold - 0.001 };
    const sr = encodeSr(context, encodeSeg(context));
    const py = validate(sr.bytes);
    const classification = all(one(py.root, 'DCM:126010'), 'DCM:125007').at(-1) as PyItem;
    assert.equal(one(classification, 'DCM:121073').value, 'SCT:301230006:Lung finding');
    const bytes = Buffer.from(sr.bytes).toString('latin1');
    for (const sars of ['882784691000119100', '840539006', 'SARS-CoV-2']) assert.ok(!bytes.includes(sars), `${sars} in an other-opacity SR`);
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
