import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DicomWebClient } from '../../src/dicomweb/client.js';
import { str, strs, TAG } from '../../src/dicomweb/dicom-json.js';
import { readMultipart } from '../../src/dicomweb/multipart.js';
import { encodeSeg } from '../../src/results/seg/encode.js';
import { readSeg } from '../../src/results/seg/read.js';
import { storeSeg } from '../../src/results/seg/store.js';
import { TestOrthanc } from '../helpers/orthanc.js';
import { syntheticResult } from '../helpers/result-context.js';

/** WADO-RS of one instance as Part 10 (the project's client has no instance retrieve; fetch + its multipart parser). */
async function retrieveInstance(pacs: TestOrthanc, study: string, series: string, sop: string): Promise<Uint8Array> {
  const res = await fetch(`${pacs.dicomweb}/studies/${study}/series/${series}/instances/${sop}`, {
    headers: {
      Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*',
      Authorization: `Basic ${Buffer.from('ctgate:pacs-secret').toString('base64')}`,
    },
  });
  assert.equal(res.status, 200);
  const boundary = /boundary="?([^";]+)"?/.exec(res.headers.get('content-type') ?? '')?.[1];
  assert.ok(boundary, 'multipart answer');
  if (!res.body) throw new Error('empty WADO-RS answer');
  const parts = [];
  for await (const part of readMultipart(res.body, boundary)) parts.push(part);
  assert.equal(parts.length, 1);
  return new Uint8Array((parts[0] as { body: Buffer }).body);
}

describe('DICOM SEG in a real PACS (Orthanc)', () => {
  const pacs = new TestOrthanc({ user: 'ctgate', password: 'pacs-secret' });
  let client: DicomWebClient;
  let dir = '';
  before(async () => {
    await pacs.start();
    client = pacs.client({ retries: 2 });
    dir = mkdtempSync(join(tmpdir(), 'ctgate-seg-pacs-'));
  });
  after(async () => {
    await pacs.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('stores the SEG beside its CT; a retry keeps one SEG series; WADO returns the same instance', async () => {
    const { context, series } = syntheticResult({ seed: 7, kind: 'covid' });
    await client.store(series.files.map((f) => f.bytes));
    const seg = encodeSeg(context);

    const path = join(dir, 'seg.dcm');
    writeFileSync(path, seg.bytes);
    const v = spawnSync('dciodvfy', [path], { encoding: 'utf8' });
    if (v.error) throw new Error(`dciodvfy could not run (install dicom3tools: bash .ci/setup.sh): ${v.error.message}`);
    assert.deepEqual(
      `${v.stdout}${v.stderr}`.split('\n').filter((l) => /^Error/.test(l)),
      [],
    );

    const first = await storeSeg(client, seg);
    assert.equal(first.seriesInstanceUid, seg.seriesInstanceUid);
    // The retry: the same job encodes again (same bytes, same UIDs) and stores again.
    const again = encodeSeg(syntheticResult({ seed: 7, kind: 'covid' }).context);
    assert.equal(again.sopInstanceUid, seg.sopInstanceUid);
    const second = await storeSeg(client, again);
    assert.equal(second.sopInstanceUid, seg.sopInstanceUid);
    assert.ok(['stored', 'already-stored'].includes(second.outcome));

    const study = context.study.studyInstanceUid;
    const studies = await client.searchStudies({ StudyInstanceUID: study, includefield: '00080061' });
    assert.equal(studies.length, 1);
    assert.deepEqual(strs(studies[0] ?? {}, '00080061').sort(), ['CT', 'SEG']);
    const segSeries = await client.searchSeries(study, { Modality: 'SEG' });
    assert.deepEqual(
      segSeries.map((s) => str(s, TAG.SeriesInstanceUID)),
      [seg.seriesInstanceUid],
    );
    const allSeries = await client.searchSeries(study);
    assert.equal(allSeries.length, 2, 'the CT series and one SEG series');
    const instances = await client.searchInstances(study, seg.seriesInstanceUid);
    assert.deepEqual(
      instances.map((i) => str(i, TAG.SOPInstanceUID)),
      [seg.sopInstanceUid],
    );

    const back = readSeg(await retrieveInstance(pacs, study, seg.seriesInstanceUid, seg.sopInstanceUid));
    assert.equal(back.sopInstanceUid, seg.sopInstanceUid);
    assert.equal(back.studyInstanceUid, study);
    assert.equal(back.frames.length, seg.frames);
    const mine = readSeg(seg.bytes);
    back.frames.forEach((f, i) => {
      assert.equal(f.sourceSopInstanceUid, mine.frames[i]?.sourceSopInstanceUid);
      assert.deepEqual(f.pixels, mine.frames[i]?.pixels);
    });
    // Every frame's source image is an instance the PACS holds in the CT series.
    const ctSops = new Set((await client.searchInstances(study, context.series.seriesInstanceUid)).map((i) => str(i, TAG.SOPInstanceUID)));
    for (const f of back.frames) assert.ok(ctSops.has(f.sourceSopInstanceUid), 'source image stored in the PACS');
  });

  it('keeps SEGs of different model versions apart', async () => {
    const { context } = syntheticResult({ seed: 7, kind: 'covid' });
    const v2 = encodeSeg({
      ...context,
      analysis: { ...context.analysis, models: context.analysis.models.map((m) => (m.name === 'lesion-unetpp' ? { ...m, version: '0.2.0' } : m)) },
    });
    await storeSeg(client, v2);
    const segSeries = await client.searchSeries(context.study.studyInstanceUid, { Modality: 'SEG' });
    assert.equal(segSeries.length, 2);
  });
});
