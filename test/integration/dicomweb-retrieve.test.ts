import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DicomWebClient } from '../../src/dicomweb/client.js';
import { str, TAG } from '../../src/dicomweb/dicom-json.js';
import { PacsError } from '../../src/dicomweb/errors.js';
import { retrieveVolume } from '../../src/dicomweb/retrieve.js';
import { TestOrthanc } from '../helpers/orthanc.js';

const DATA = join(process.cwd(), '..', 'shared', 'data');

/** HU per slice read by pydicom: the independent reference the retrieved volume must equal voxel for voxel. */
function referenceHu(files: string[]): Record<string, { hu: Int16Array; position: number[] }> {
  const json = execFileSync('/usr/bin/python3', ['test/helpers/pydicom-read.py', ...files], { encoding: 'utf8', maxBuffer: 1 << 28 });
  const parsed = JSON.parse(json) as Record<string, { hu: string; position: number[] }>;
  return Object.fromEntries(
    Object.entries(parsed).map(([sop, v]) => {
      const b = Buffer.from(v.hu, 'base64');
      return [sop, { hu: new Int16Array(b.buffer, b.byteOffset, b.length / 2), position: v.position }];
    }),
  );
}

describe('DICOMweb retrieval from a real Orthanc', () => {
  const pacs = new TestOrthanc({ user: 'ctgate', password: 'pacs-secret' });
  let client: DicomWebClient;
  before(async () => {
    await pacs.start();
    client = pacs.client({ retries: 2 });
  });
  after(async () => {
    await pacs.stop();
  });

  for (const set of ['dcmqi-ct-3slice/ct', 'lidc-chest']) {
    it(`stores ${set}, finds it with QIDO and retrieves it voxel for voxel`, async () => {
      const dir = join(DATA, set);
      const files = readdirSync(dir)
        .filter((f) => f.endsWith('.dcm'))
        .map((f) => join(dir, f));
      assert.ok(files.length >= 2, `test data present in ${dir}`);
      await client.store(files.map((f) => readFileSync(f)));
      const ref = referenceHu(files);
      const firstSop = Object.keys(ref)[0] as string;
      const studies = await client.searchStudies({ includefield: '00200032' });
      let found: { study: string; series: string } | undefined;
      for (const st of studies) {
        const study = str(st, TAG.StudyInstanceUID) as string;
        for (const se of await client.searchSeries(study)) {
          const series = str(se, TAG.SeriesInstanceUID) as string;
          const inst = await client.searchInstances(study, series);
          if (inst.some((i) => str(i, TAG.SOPInstanceUID) === firstSop)) found = { study, series };
        }
      }
      assert.ok(found, 'series found by QIDO');
      const progress: number[] = [];
      const r = await retrieveVolume(client, found.study, found.series, { concurrency: 2, onProgress: (d) => progress.push(d) });
      assert.equal(progress.at(-1), files.length);
      const [nx, ny, nz] = r.volume.geometry.size;
      assert.equal(nz, files.length);
      for (let k = 0; k < nz; k++) {
        const meta = r.slices[k];
        assert.ok(meta);
        const expected = ref[meta.sopInstanceUid];
        assert.ok(expected, `slice ${meta.sopInstanceUid} known to pydicom`);
        const got = r.volume.data.subarray(k * nx * ny, (k + 1) * nx * ny);
        assert.equal(got.length, expected.hu.length);
        let diff = 0;
        for (let i = 0; i < got.length; i++) if (got[i] !== expected.hu[i]) diff++;
        assert.equal(diff, 0, `slice ${k}: ${diff} voxels differ`);
        if (k > 0) assert.ok((r.slices[k]?.position[2] as number) > (r.slices[k - 1]?.position[2] as number), 'sorted by position');
      }
    });
  }

  it('names the transfer syntax when the PACS can only send a compressed frame (JPEG 2000)', async () => {
    const j2k = join(mkdtempSync(join(tmpdir(), 'ctgate-j2k-')), 'j2k.dcm');
    execFileSync('gdcmconv', ['--j2k', join(DATA, 'lidc-chest', '0.dcm'), j2k]);
    // New UIDs: the uncompressed original may already be in this PACS, and Orthanc keeps the first copy.
    execFileSync('dcmodify', ['-nb', '-gst', '-gse', '-gin', j2k]);
    const stored = await client.store([readFileSync(j2k)]);
    const ref = (stored['00081199']?.Value?.[0] ?? {}) as Record<string, { Value?: string[] }>;
    const sop = ref['00081155']?.Value?.[0];
    assert.ok(sop, 'STOW answer lists the stored instance');
    const studies = await client.searchStudies({});
    for (const st of studies) {
      const study = str(st, TAG.StudyInstanceUID) as string;
      for (const se of await client.searchSeries(study)) {
        const series = str(se, TAG.SeriesInstanceUID) as string;
        if (!(await client.searchInstances(study, series)).some((i) => str(i, TAG.SOPInstanceUID) === sop)) continue;
        await assert.rejects(
          client.retrieveFrame(study, series, sop),
          (e: unknown) => e instanceof PacsError && e.kind === 'unsupported-transfer-syntax' && /1\.2\.840\.10008\.1\.2\.4\.90/.test(e.message) && !e.retryable,
        );
        return;
      }
    }
    assert.fail('stored JPEG 2000 instance not found by QIDO');
  });

  it('fails clearly and without retrying on 4xx, and on a wrong password', async () => {
    await assert.rejects(client.retrieveFrame('1.2.3', '4.5.6', '7.8.9'), (e: unknown) => e instanceof PacsError && e.kind === 'client' && e.status === 404);
    const wrong = new DicomWebClient({
      url: pacs.dicomweb,
      auth: { kind: 'basic', user: 'ctgate', password: 'nope' },
      timeoutMs: 5000,
      retries: 3,
      retryBaseMs: 10,
    });
    await assert.rejects(wrong.searchStudies({}), (e: unknown) => e instanceof PacsError && e.status === 401 && !e.retryable);
  });

  it('reports a PACS that does not answer as a retryable network error', async () => {
    const gone = new DicomWebClient({ url: 'http://127.0.0.1:1/dicom-web', auth: { kind: 'none' }, timeoutMs: 1000, retries: 1, retryBaseMs: 10 });
    await assert.rejects(gone.searchStudies({}), (e: unknown) => e instanceof PacsError && e.kind === 'network' && e.retryable);
    await assert.rejects(gone.retrieveFrame('1', '2', '3'), (e: unknown) => e instanceof PacsError && e.kind === 'network');
  });
});
