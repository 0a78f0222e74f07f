/**
 * The received-study source (src/study-sources/received.ts) over a receive folder written here (as storescp writes
 * it: one folder per study), with no peer: the same finding rules as the DICOMweb source (UID first, else exactly
 * one study with the accession; several are ambiguous; neither is unusable), the wait until the study is stable
 * (by the index's own account too), the patient read at study and series level, the series candidates with what
 * selection needs, and a series read into the same volume `ctgate analyze` builds from those files.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadSeriesFromFiles } from '../../src/dicom/part10-series.js';
import { pollUntilStable } from '../../src/dicomweb/study-finder.js';
import { openStudyIndex } from '../../src/dimse-receive/receiver.js';
import { selectSeries } from '../../src/imaging/series-selection.js';
import { silentLogger } from '../../src/observability/log.js';
import { ReceivedStudySource } from '../../src/study-sources/received.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';

const wait = { pollMs: 20, stableMs: 50, deadlineMs: 3000 };

describe('received-study source', () => {
  let root = '';
  let source: ReceivedStudySource;
  const studies: Record<string, { studyInstanceUid: string; seriesInstanceUid: string; files: string[] }> = {};

  async function receive(name: string, seed: number, accession: string, patientId = 'MRN0001') {
    const p = generateChestCt({ seed, kind: 'covid', size: [32, 32, 12], spacing: [8, 8, 10] });
    const s = writeCtSeries(p.volume, { seed, accessionNumber: accession, patientId, patientName: 'TEST^PATIENT', seriesDescription: `series ${name}` });
    // As storescp writes them: <dir>/studies/<StudyInstanceUID>/CT.<SOPInstanceUID>.dcm.
    const dir = join(root, 'receive', 'studies', s.studyInstanceUid);
    const files: string[] = [];
    await mkdir(dir, { recursive: true });
    for (const f of s.files) {
      const path = join(dir, `CT.${f.sopInstanceUid}.dcm`);
      await writeFile(path, f.bytes);
      files.push(path);
    }
    studies[name] = { studyInstanceUid: s.studyInstanceUid, seriesInstanceUid: s.seriesInstanceUid, files };
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ctgate-study-sources-'));
    await receive('a', 11, 'ACC-A');
    await receive('b1', 12, 'ACC-TWICE');
    await receive('b2', 13, 'ACC-TWICE', 'MRN0002');
    // The receiver's stable time is 1 s; the files were just written, so the index says "not stable" at first.
    const index = await openStudyIndex({ dir: join(root, 'receive'), stableSeconds: 1, retentionHours: 1 }, silentLogger, { readOnly: true });
    source = new ReceivedStudySource(index);
  });
  after(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('finds by StudyInstanceUID first, else by exactly one accession; several are ambiguous, neither is unusable', async () => {
    const a = studies.a as { studyInstanceUid: string };
    const byUid = await source.look({ studyInstanceUid: a.studyInstanceUid, accessionNumber: 'ACC-TWICE' });
    assert.equal(byUid.status, 'found');
    assert.equal(byUid.status === 'found' && byUid.matchedBy, 'studyInstanceUid');
    const byAcc = await source.look({ accessionNumber: ' ACC-A ' });
    assert.equal(byAcc.status === 'found' && byAcc.studyInstanceUid, a.studyInstanceUid);
    assert.equal(byAcc.status === 'found' && byAcc.instances, 12);
    const twice = await source.look({ accessionNumber: 'ACC-TWICE' });
    assert.equal(twice.status, 'ambiguous');
    assert.match(twice.status === 'ambiguous' ? twice.reason : '', /^2 studies carry the order's AccessionNumber/);
    const none = await source.look({ accessionNumber: 'ACC-NONE' });
    assert.deepEqual(none, { status: 'not-found', reason: "no study with the order's AccessionNumber has been received" });
    assert.equal((await source.look({ patientId: 'MRN0001' })).status, 'unusable');
    // No accession value in any reason.
    assert.ok(!JSON.stringify([none, twice]).includes('ACC-'));
  });

  it('waits until the study is stable by the receiver (no arrival for its stable time) and by its unchanged count', async () => {
    const t0 = Date.now();
    const r = await source.waitForStudy({ accessionNumber: 'ACC-A' }, wait);
    assert.equal(r.status, 'ready', JSON.stringify(r));
    assert.equal(r.status === 'ready' && r.instances, 12);
    assert.ok(r.polls > 1, 'not ready at the first look: files that just arrived');
    assert.ok(Date.now() - t0 < 3000);
    const amb = await source.waitForStudy({ accessionNumber: 'ACC-TWICE' }, wait);
    assert.equal(amb.status, 'ambiguous');
    const late = await source.waitForStudy({ accessionNumber: 'ACC-LATER' }, { ...wait, deadlineMs: 150 });
    assert.equal(late.status, 'timeout');
    assert.match(late.status === 'timeout' ? late.reason : '', /no study with the order's AccessionNumber has been received/);
  });

  it('the generic wait polls through transient problems and reports them, and stops on the others', async () => {
    let n = 0;
    const errors: string[] = [];
    const r = await pollUntilStable(
      {
        holder: 'the test source',
        look: async () => {
          n++;
          if (n === 1) throw Object.assign(new Error('down'), { transient: true });
          return { status: 'found', studyInstanceUid: '1.2.3', matchedBy: 'accessionNumber', instances: 3, settled: n > 3 };
        },
        transient: (e) => ((e as { transient?: boolean }).transient ? 'the source is down' : undefined),
      },
      { accessionNumber: 'X' },
      { ...wait, stableMs: 0, onPoll: (e) => e.error && errors.push(e.error) },
    );
    assert.equal(r.status, 'ready');
    assert.equal(n, 4, 'ready only once the source says settled');
    assert.deepEqual(errors, ['the source is down']);
    await assert.rejects(
      pollUntilStable(
        {
          holder: 'the test source',
          look: async () => {
            throw new Error('disk gone');
          },
          transient: () => undefined,
        },
        {},
        wait,
      ),
      /disk gone/,
    );
  });

  it('reads the patient at study and series level', async () => {
    const b2 = studies.b2 as { studyInstanceUid: string; seriesInstanceUid: string };
    assert.deepEqual(await source.patient(b2.studyInstanceUid), {
      level: 'study',
      patientId: 'MRN0002',
      patientName: 'TEST^PATIENT',
      patientBirthDate: '19700101',
    });
    assert.equal((await source.patient(b2.studyInstanceUid, b2.seriesInstanceUid))?.level, 'series');
    assert.equal((await source.patient(b2.studyInstanceUid, b2.seriesInstanceUid))?.patientId, 'MRN0002');
    assert.equal(await source.patient('2.25.1'), null);
    assert.equal(await source.patient(b2.studyInstanceUid, '2.25.1'), null);
  });

  it('lists the series as selection candidates and loads the chosen one into the volume ctgate analyze builds from the same files', async () => {
    const a = studies.a as { studyInstanceUid: string; seriesInstanceUid: string; files: string[] };
    const candidates = await source.seriesCandidates(a.studyInstanceUid);
    assert.equal(candidates.length, 1);
    const c = candidates[0];
    assert.equal(c?.seriesInstanceUid, a.seriesInstanceUid);
    assert.equal(c?.modality, 'CT');
    assert.equal(c?.numberOfInstances, 12);
    assert.ok((c?.imageType.length ?? 0) > 0);
    assert.equal(c?.orientation?.length, 6);
    assert.equal(c?.description, 'series a');
    // The default rules accept it (12 axial ORIGINAL slices of 10 mm would not pass a thickness rule: only a decision is asked).
    assert.equal(selectSeries(candidates).decisions.length, 1);
    const r = await source.loadSeries(a.studyInstanceUid, a.seriesInstanceUid, { concurrency: 1 });
    const ref = await loadSeriesFromFiles(a.files);
    assert.deepEqual(r.volume.geometry, ref.volume.geometry);
    assert.deepEqual(Buffer.from(r.volume.data.buffer), Buffer.from(ref.volume.data.buffer));
    assert.deepEqual(
      r.slices.map((s) => s.sopInstanceUid),
      ref.slices.map((s) => s.sopInstanceUid),
    );
    assert.deepEqual(r.decodedSyntaxes, []);
    assert.deepEqual(await source.instanceUids(a.studyInstanceUid, a.seriesInstanceUid).then((u) => u.sort()), ref.slices.map((s) => s.sopInstanceUid).sort());
    const study = await source.sourceStudy(a.studyInstanceUid);
    assert.equal(study.studyInstanceUid, a.studyInstanceUid);
    assert.equal(study.accessionNumber, 'ACC-A');
    assert.equal(study.patientId, 'MRN0001');
    await assert.rejects(
      source.loadSeries(a.studyInstanceUid, '2.25.1', { concurrency: 1 }),
      (e: Error & { retryable?: boolean }) => e.name === 'StudySourceError',
    );
  });
});
