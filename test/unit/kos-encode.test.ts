import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sourceSeriesKey } from '../../src/results/context.js';
import { encodeKeyImages, SECONDARY_CAPTURE_IMAGE_STORAGE } from '../../src/results/key-image-sc/encode.js';
import { encodeKos, KEY_OBJECT_SELECTION_STORAGE, KOS_SERIES_DESCRIPTION, kosUids, NoKosError } from '../../src/results/kos/encode.js';
import { lesionModel } from '../../src/results/seg/encode.js';
import { CT_IMAGE_STORAGE } from '../../src/synthetic/dicom-writer.js';
import { assertDciodvfyClean } from '../helpers/dciodvfy.js';
import { syntheticResult } from '../helpers/result-context.js';

interface PyKos {
  sopClassUid: string;
  sopInstanceUid: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  seriesNumber: number;
  modality: string;
  seriesDescription: string;
  patientId: string;
  title: string;
  template: string[];
  evidence: { study: string; series: string; instances: string[] }[];
  hasPixelData: boolean;
  items: { rel: string; type: string; name?: string; value?: string; refs?: { sopClass: string; sop: string } }[];
}

let dir = '';
let count = 0;

/** Writes the KOS to a temp file, fails on any dciodvfy "Error" line, and returns what pydicom reads from it. */
function validate(bytes: Uint8Array): PyKos {
  const path = join(dir, `kos-${++count}.dcm`);
  writeFileSync(path, bytes);
  assertDciodvfyClean(path, /KeyObjectSelectionDocument/);
  const json = execFileSync('/usr/bin/python3', ['test/helpers/kos-check.py', path], { encoding: 'utf8' });
  return (JSON.parse(json) as Record<string, PyKos>)[path] as PyKos;
}

describe('Key Object Selection (TID 2000) encoder', () => {
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ctgate-kos-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('selects the key CT slices and their secondary captures; dciodvfy finds no error', () => {
    const { context } = syntheticResult({ seed: 7, kind: 'covid' });
    const kos = encodeKos(context);
    const py = validate(kos.bytes);
    assert.equal(py.sopClassUid, KEY_OBJECT_SELECTION_STORAGE);
    assert.equal(py.modality, 'KO');
    assert.equal(py.seriesNumber, 9004);
    assert.equal(py.seriesDescription, KOS_SERIES_DESCRIPTION);
    assert.equal(py.studyInstanceUid, context.study.studyInstanceUid);
    assert.equal(py.patientId, context.study.patientId);
    assert.equal(py.title, 'DCM:113000:Of Interest');
    assert.deepEqual(py.template, ['DCMR:2000']);
    assert.equal(py.hasPixelData, false);
    const uids = kosUids(sourceSeriesKey(context.series), lesionModel(context));
    assert.equal(py.seriesInstanceUid, uids.seriesInstanceUid);
    assert.equal(py.sopInstanceUid, uids.sopInstanceUid);
    assert.equal(kos.seriesInstanceUid, uids.seriesInstanceUid);

    // The key slices, largest lesion area first: the real SOP instances of the series at those z indices.
    const keys = context.analysis.findings?.keySlices ?? [];
    assert.ok(keys.length > 0);
    const sliceUids = keys.map((k) => context.series.slices[k.index]?.sopInstanceUid as string);
    assert.deepEqual(kos.sourceSopInstanceUids, sliceUids);
    // …and the secondary captures the key-image encoder writes for them, same order.
    const sc = encodeKeyImages(context);
    assert.deepEqual(
      kos.keyImageSopInstanceUids,
      sc.instances.map((i) => i.sopInstanceUid),
    );
    const images = py.items.filter((i) => i.type === 'IMAGE');
    assert.ok(images.every((i) => i.rel === 'CONTAINS'));
    assert.deepEqual(
      images.map((i) => i.refs),
      [
        ...sliceUids.map((sop) => ({ sopClass: CT_IMAGE_STORAGE, sop })),
        ...sc.instances.map((i) => ({ sopClass: SECONDARY_CAPTURE_IMAGE_STORAGE, sop: i.sopInstanceUid })),
      ],
    );
    const description = py.items.filter((i) => i.name === 'DCM:113012:Key Object Description');
    assert.equal(description.length, 1);
    assert.equal(description[0]?.type, 'TEXT');
    assert.match(description[0]?.value ?? '', /NOT FOR CLINICAL USE/);
    assert.ok(py.items.some((i) => i.rel === 'HAS OBS CONTEXT' && i.value === 'DCM:121007:Device'));
    // Evidence: every instance referenced, by series, in the CT's study.
    assert.deepEqual(py.evidence, [
      { study: context.study.studyInstanceUid, series: context.series.seriesInstanceUid, instances: sliceUids },
      { study: context.study.studyInstanceUid, series: sc.seriesInstanceUid, instances: sc.instances.map((i) => i.sopInstanceUid) },
    ]);
  });

  it('without the secondary captures it selects the CT slices only', () => {
    const { context } = syntheticResult({ seed: 7, kind: 'covid' });
    const py = validate(encodeKos(context, { referenceKeyImages: false }).bytes);
    assert.ok(py.items.filter((i) => i.type === 'IMAGE').every((i) => i.refs?.sopClass === CT_IMAGE_STORAGE));
    assert.deepEqual(
      py.evidence.map((e) => e.series),
      [context.series.seriesInstanceUid],
    );
  });

  it('is deterministic: the same context gives the same bytes; another lesion model version another series', () => {
    const a = syntheticResult({ seed: 7, kind: 'covid' }).context;
    const b = syntheticResult({ seed: 7, kind: 'covid' }).context;
    const first = encodeKos(a);
    assert.deepEqual(Buffer.from(first.bytes), Buffer.from(encodeKos(b).bytes));
    b.analysis.models = b.analysis.models.map((m) => (m.name === 'lesion-unetpp' ? { ...m, version: '0.2.0' } : m));
    const other = encodeKos(b);
    assert.notEqual(other.seriesInstanceUid, first.seriesInstanceUid);
    assert.notEqual(other.sopInstanceUid, first.sopInstanceUid);
  });

  it('no key slices (no lesion) or not assessable: NoKosError, nothing to select', () => {
    const healthy = syntheticResult({ seed: 3, kind: 'healthy' }).context;
    assert.throws(
      () => encodeKos(healthy),
      (e: unknown) => e instanceof NoKosError && e.reason === 'no-key-slices',
    );
    const { context } = syntheticResult({ seed: 7, kind: 'covid' });
    context.analysis = { ...context.analysis, verdict: 'not-assessable', reason: 'no lung found', probability: null, findings: null, lesionMask: null };
    assert.throws(
      () => encodeKos(context),
      (e: unknown) => e instanceof NoKosError && e.reason === 'not-assessable',
    );
  });
});
