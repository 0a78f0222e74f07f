import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import dcmjs from 'dcmjs';
import { type CommandIo, seriesExplainCommand } from '../../src/cli/series-explain.js';
import type { DicomWebClient } from '../../src/dicomweb/client.js';
import { type DicomJson, TAG } from '../../src/dicomweb/dicom-json.js';
import { PacsError } from '../../src/dicomweb/errors.js';
import { type CandidateSource, seriesCandidates } from '../../src/dicomweb/series-candidates.js';
import { dicomDate, findStudy, type PollEvent, type StudySource, waitForStableStudy } from '../../src/dicomweb/study-finder.js';
import { selectSeries } from '../../src/imaging/series-selection.js';
import { TestOrthanc } from '../helpers/orthanc.js';

const { DicomDict, DicomMetaDictionary } = dcmjs.data;
const CT_IMAGE = '1.2.840.10008.5.1.4.1.1.2';
const AXIAL = [1, 0, 0, 0, 1, 0];
const CORONAL = [1, 0, 0, 0, 0, -1];

interface SeriesSpec {
  number: number;
  description: string;
  slices: number;
  imageType: string[];
  thickness?: number;
  spacing?: number;
  orientation: number[];
  kernel?: string;
}

interface StudySpec {
  uid: string;
  accession: string;
  patientId: string;
  date: string;
}

/** Part-10 CT instances of one synthetic series, 32×32, written with dcmjs. */
function makeSeries(study: StudySpec, s: SeriesSpec): Uint8Array[] {
  const seriesUid = `${study.uid}.${s.number}`;
  const out: Uint8Array[] = [];
  const normalIsZ = s.orientation[5] === 0;
  for (let k = 0; k < s.slices; k++) {
    const z = k * (s.spacing ?? s.thickness ?? 1);
    const ds: Record<string, unknown> = {
      SOPClassUID: CT_IMAGE,
      SOPInstanceUID: `${seriesUid}.${k + 1}`,
      StudyInstanceUID: study.uid,
      SeriesInstanceUID: seriesUid,
      FrameOfReferenceUID: `${study.uid}.0`,
      Modality: 'CT',
      PatientID: study.patientId,
      PatientName: 'SELECTION^TEST',
      AccessionNumber: study.accession,
      StudyDate: study.date,
      StudyID: '1',
      SeriesNumber: String(s.number),
      InstanceNumber: String(k + 1),
      SeriesDescription: s.description,
      ImageType: s.imageType,
      ImagePositionPatient: normalIsZ ? [-11, -11, -z] : [-11, z, 11],
      ImageOrientationPatient: s.orientation,
      PixelSpacing: [0.7, 0.7],
      Rows: 32,
      Columns: 32,
      SamplesPerPixel: 1,
      PhotometricInterpretation: 'MONOCHROME2',
      BitsAllocated: 16,
      BitsStored: 16,
      HighBit: 15,
      PixelRepresentation: 1,
      RescaleIntercept: '-1024',
      RescaleSlope: '1',
      PixelData: new Int16Array(32 * 32).fill(k).buffer,
      _vrMap: { PixelData: 'OW' },
    };
    if (s.thickness !== undefined) ds.SliceThickness = String(s.thickness);
    if (s.kernel !== undefined) ds.ConvolutionKernel = s.kernel;
    const meta = {
      FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
      MediaStorageSOPClassUID: CT_IMAGE,
      MediaStorageSOPInstanceUID: ds.SOPInstanceUID,
      TransferSyntaxUID: '1.2.840.10008.1.2.1',
      ImplementationClassUID: '2.25.1',
    };
    const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
    dict.dict = DicomMetaDictionary.denaturalizeDataset(ds);
    out.push(new Uint8Array(dict.write()));
  }
  return out;
}

const STUDY: StudySpec = { uid: '2.25.90417731350934181947293081', accession: 'ACC-SEL-1', patientId: 'PAT-SEL', date: '20240102' };
const LUNG: SeriesSpec = {
  number: 3,
  description: 'LUNG 1.25',
  slices: 40,
  imageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
  thickness: 1.25,
  orientation: AXIAL,
  kernel: 'B70f',
};
const SCOUT: SeriesSpec = {
  number: 1,
  description: 'Topogram 0.6 T20f',
  slices: 1,
  imageType: ['ORIGINAL', 'PRIMARY', 'LOCALIZER'],
  thickness: 0.6,
  orientation: CORONAL,
};
const CORONAL_MPR: SeriesSpec = {
  number: 5,
  description: 'Thorax 3.0 reformat',
  slices: 24,
  imageType: ['DERIVED', 'SECONDARY', 'MPR'],
  thickness: 3,
  orientation: CORONAL,
};
const SOFT: SeriesSpec = {
  number: 2,
  description: 'Thorax 1.0 Br40',
  slices: 44,
  imageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
  thickness: 1,
  orientation: AXIAL,
  kernel: 'Br40',
};
// No SliceThickness: candidates must read its metadata to measure the spacing from positions.
const NO_THICKNESS: SeriesSpec = {
  number: 4,
  description: 'Lung 2.5 (no thickness)',
  slices: 24,
  imageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
  spacing: 2.5,
  orientation: AXIAL,
};

/** Counts the DICOMweb calls that candidate building and study finding make. */
function counting(client: DicomWebClient) {
  const calls: string[] = [];
  const source: CandidateSource & StudySource = {
    searchStudies: (q) => {
      calls.push('searchStudies');
      return client.searchStudies(q);
    },
    searchSeries: (st, q) => {
      calls.push('searchSeries');
      return client.searchSeries(st, q);
    },
    seriesMetadata: (st, se) => {
      calls.push(`seriesMetadata ${se}`);
      return client.seriesMetadata(st, se);
    },
  };
  return { calls, source };
}

function captureIo(): CommandIo & { stdout: () => string; stderr: () => string } {
  let out = '';
  let err = '';
  return {
    out: (t) => {
      out += t;
    },
    err: (t) => {
      err += t;
    },
    stdout: () => out,
    stderr: () => err,
  };
}

describe('study finding, stability and series selection against a real Orthanc', () => {
  const pacs = new TestOrthanc({ user: 'ctgate', password: 'pacs-secret' });
  let client: DicomWebClient;
  before(async () => {
    await pacs.start();
    client = pacs.client();
  });
  after(async () => {
    await pacs.stop();
  });

  it('waits until a study stored in two batches stops changing, then reports it ready', async () => {
    const first = [...makeSeries(STUDY, SCOUT), ...makeSeries(STUDY, LUNG)];
    const second = [...makeSeries(STUDY, SOFT), ...makeSeries(STUDY, NO_THICKNESS), ...makeSeries(STUDY, CORONAL_MPR)];
    await client.store(first);
    const events: PollEvent[] = [];
    let secondBatch: Promise<unknown> | undefined;
    const r = await waitForStableStudy(
      client,
      { accessionNumber: STUDY.accession },
      {
        pollMs: 50,
        maxPollMs: 200,
        stableMs: 500,
        deadlineMs: 10_000,
        onPoll: (e) => {
          events.push(e);
          // The second batch starts once the first has been seen, well inside the stability window.
          if (!secondBatch && e.instances === first.length) secondBatch = client.store(second).catch((err: unknown) => err);
        },
      },
    );
    assert.ok(!((await secondBatch) instanceof Error), 'second batch stored');
    assert.deepEqual(r.status, 'ready', JSON.stringify(r));
    assert.ok(r.status === 'ready');
    assert.equal(r.studyInstanceUid, STUDY.uid);
    assert.equal(r.matchedBy, 'accessionNumber');
    assert.equal(r.instances, first.length + second.length, 'ready only with both batches in');
    assert.ok(
      events.some((e) => e.instances === first.length),
      'a poll saw the first batch alone',
    );
    const last = events.at(-1) as PollEvent;
    assert.ok((last.stableForMs ?? 0) >= 500, `stable for ${last.stableForMs} ms`);
  });

  it('finds the study by StudyInstanceUID and by accession, exactly', async () => {
    const byUid = await findStudy(client, { studyInstanceUid: STUDY.uid, accessionNumber: 'IGNORED' });
    assert.equal(byUid.status, 'found');
    assert.ok(byUid.status === 'found' && byUid.matchedBy === 'studyInstanceUid');
    const byAcc = await findStudy(client, { accessionNumber: ` ${STUDY.accession} ` });
    assert.ok(byAcc.status === 'found' && byAcc.studyInstanceUid === STUDY.uid);
    // QIDO wildcards in the order's value match nothing on our side.
    assert.equal((await findStudy(client, { accessionNumber: 'ACC-SEL-*' })).status, 'not-found');
    assert.equal((await findStudy(client, { accessionNumber: 'acc-sel-1' })).status, 'not-found');
    const none = await findStudy(client, { studyInstanceUid: '2.25.1234' });
    assert.deepEqual(none, { status: 'not-found', reason: "no study with the order's StudyInstanceUID is in the PACS" });
    const unusable = await findStudy(client, { patientId: STUDY.patientId, orderDate: '2024-01-02' });
    assert.equal(unusable.status, 'unusable');
  });

  it('falls back to PatientID + StudyDate only when configured, and calls several matches ambiguous', async () => {
    const fb = { patientDateFallback: { daysBefore: 1, daysAfter: 1 } };
    const one = await findStudy(client, { patientId: STUDY.patientId, orderDate: '2024-01-01T16:30:00+01:00' }, fb);
    assert.ok(one.status === 'found' && one.studyInstanceUid === STUDY.uid && one.matchedBy === 'patientAndDate', JSON.stringify(one));
    const outside = await findStudy(client, { patientId: STUDY.patientId, orderDate: '20231230' }, fb);
    assert.equal(outside.status, 'not-found');

    const dupA: StudySpec = { uid: '2.25.777001', accession: 'ACC-DUP', patientId: 'PAT-DUP', date: '20240301' };
    const dupB: StudySpec = { uid: '2.25.777002', accession: 'ACC-DUP', patientId: 'PAT-DUP', date: '20240302' };
    const tiny = (st: StudySpec) => makeSeries(st, { ...LUNG, slices: 1 });
    await client.store([...tiny(dupA), ...tiny(dupB)]);
    const both = await findStudy(client, { patientId: 'PAT-DUP', orderDate: '2024-03-01' }, fb);
    assert.equal(both.status, 'ambiguous');
    assert.ok(both.status === 'ambiguous');
    assert.deepEqual([...both.studyInstanceUids].sort(), [dupA.uid, dupB.uid]);
    assert.match(both.reason, /^ambiguous: 2 CT studies of the order's patient have StudyDate 20240229–20240302 \(2\.25\.77700\d \(2024030\d\), /);
    assert.doesNotMatch(both.reason, /PAT-DUP/, 'no patient identifier in reasons');
    const acc = await findStudy(client, { accessionNumber: 'ACC-DUP' });
    assert.equal(acc.status, 'ambiguous');
    const waited = await waitForStableStudy(client, { accessionNumber: 'ACC-DUP' }, { pollMs: 20, stableMs: 100, deadlineMs: 2000 });
    assert.equal(waited.status, 'ambiguous');
    assert.equal(waited.polls, 1, 'ambiguity is reported at once');
  });

  it('times out with a reason for an accession that never arrives', async () => {
    const t0 = Date.now();
    const polls: number[] = [];
    const r = await waitForStableStudy(
      client,
      { accessionNumber: 'ACC-NEVER' },
      { pollMs: 50, maxPollMs: 400, stableMs: 300, deadlineMs: 700, onPoll: (e) => e.nextPollMs && polls.push(e.nextPollMs) },
    );
    const took = Date.now() - t0;
    assert.equal(r.status, 'timeout');
    assert.ok(r.status === 'timeout');
    assert.match(r.reason, /^gave up after \d+ ms and \d+ poll\(s\): no study with the order's AccessionNumber is in the PACS$/);
    assert.ok(took >= 700 && took < 3000, `took ${took} ms`);
    assert.deepEqual(polls.slice(0, 3), [50, 100, 200], 'backoff doubles');
  });

  it('builds candidates with few requests and selects the lung series, saying why the others were refused', async () => {
    const { calls, source } = counting(client);
    const candidates = await seriesCandidates(source, STUDY.uid);
    // One series QIDO per instance attribute at most (Orthanc 1.10 ignores the comma list as dicomweb-client sends it),
    // and series metadata only for the series without SliceThickness.
    const qido = calls.filter((c) => c === 'searchSeries').length;
    assert.ok(qido >= 1 && qido <= 5, `${qido} series QIDOs`);
    assert.deepEqual(
      calls.filter((c) => c !== 'searchSeries'),
      [`seriesMetadata ${STUDY.uid}.4`],
    );
    assert.deepEqual(
      candidates.map((c) => c.seriesNumber),
      [1, 2, 3, 4, 5],
    );
    const lung = candidates[2];
    assert.deepEqual(lung, {
      seriesInstanceUid: `${STUDY.uid}.3`,
      seriesNumber: 3,
      modality: 'CT',
      description: 'LUNG 1.25',
      imageType: ['ORIGINAL', 'PRIMARY', 'AXIAL'],
      sliceThickness: 1.25,
      orientation: AXIAL,
      numberOfInstances: 40,
      kernel: 'B70f',
    });
    const noThk = candidates[3];
    assert.equal(noThk?.sliceThickness, undefined);
    assert.equal(noThk?.sliceSpacing, 2.5);
    assert.equal(noThk?.numberOfInstances, 24);

    const sel = selectSeries(candidates);
    assert.equal(sel.chosen?.seriesInstanceUid, `${STUDY.uid}.3`);
    const why = Object.fromEntries(sel.decisions.map((d) => [d.seriesNumber ?? 0, d]));
    assert.equal(why[1]?.accepted, false);
    assert.ok(why[1]?.reasons.includes('ImageType ORIGINAL\\PRIMARY\\LOCALIZER includes LOCALIZER'));
    assert.ok(why[1]?.reasons.some((r) => r.startsWith('not axial')));
    assert.ok(why[1]?.reasons.includes('1 instance(s), fewer than 20'));
    assert.equal(why[5]?.accepted, false);
    assert.deepEqual(why[5]?.reasons, [
      'ImageType DERIVED\\SECONDARY\\MPR lacks ORIGINAL, PRIMARY',
      'not axial: the slice normal is 90.0° from the patient z axis (at most 10°)',
    ]);
    assert.equal(why[2]?.rank, 3, 'thinner soft-tissue series ranks below the preferred lung ones');
    assert.match(why[2]?.reasons[0] as string, /is a preferred lung reconstruction and this is not/);
    assert.equal(why[4]?.rank, 2);
    assert.match(why[4]?.reasons[0] as string, /has thinner slices \(1\.25 mm < 2\.5 mm\)/);

    // 'always' measures the spacing of every CT series (one metadata request each).
    const all = counting(client);
    const measured = await seriesCandidates(all.source, STUDY.uid, { measureSpacing: 'always' });
    assert.equal(all.calls.length, 6);
    assert.equal(measured[2]?.sliceSpacing, 1.25);
  });

  it('ctgate series explain prints the decisions and exits 0, 3 or 1', async () => {
    const auth = ['--pacs', pacs.dicomweb, '--user', 'ctgate', '--password', 'pacs-secret'];
    let io = captureIo();
    assert.equal(await seriesExplainCommand([...auth, '--accession', STUDY.accession, '--rules', 'mappings/series.yaml'], io), 0, io.stderr());
    const text = io.stdout();
    assert.match(text, /found by accessionNumber\); 5 series; rules: mappings\/series\.yaml/);
    assert.match(text, /^3 +CT +LUNG 1\.25 +1\.25 +40 +B70f +0° +ORIGINAL\\PRIMARY\\AXIAL +CHOSEN$/m);
    assert.match(text, /^1 +CT +Topogram 0\.6 T20f .* refused$/m);
    assert.match(text, /^ {2}- ImageType DERIVED\\SECONDARY\\MPR lacks ORIGINAL, PRIMARY$/m);
    assert.match(text, new RegExp(`^Chosen: series 3 "LUNG 1.25" \\(${STUDY.uid}.3\\)$`, 'm'));

    io = captureIo();
    assert.equal(await seriesExplainCommand([...auth, '--study', STUDY.uid, '--json'], io), 0);
    const report = JSON.parse(io.stdout());
    assert.equal(report.chosen, `${STUDY.uid}.3`);
    assert.equal(report.study.instances, 133);
    assert.equal(report.series.length, 5);

    io = captureIo();
    assert.equal(await seriesExplainCommand([...auth, '--study', '2.25.777001'], io), 3, 'one-slice study: nothing fits');
    assert.match(
      io.stdout(),
      /^No series fits the selection rules: series 3 "LUNG 1\.25" \(2\.25\.777001\.3\) was refused because 1 instance\(s\), fewer than 20\.$/m,
    );
    io = captureIo();
    assert.equal(await seriesExplainCommand([...auth, '--accession', 'ACC-NEVER'], io), 3);
    assert.match(io.stdout(), /Study not-found/);

    io = captureIo();
    assert.equal(await seriesExplainCommand(['--accession', 'X'], io), 1);
    assert.match(io.stderr(), /--pacs is required/);
    io = captureIo();
    assert.equal(await seriesExplainCommand([...auth, '--study', 'A', '--accession', 'B'], io), 1);
    io = captureIo();
    assert.equal(await seriesExplainCommand(['--pacs', pacs.dicomweb, '--user', 'ctgate', '--password', 'wrong', '--study', STUDY.uid], io), 1);
    assert.match(io.stderr(), /PACS error \(client\): .*HTTP 401/);
    io = captureIo();
    assert.equal(await seriesExplainCommand(['--pacs', 'http://127.0.0.1:1/dicom-web', '--study', STUDY.uid, '--timeout-ms', '1000'], io), 1);
    assert.match(io.stderr(), /PACS error \(network\)/);
  });
});

describe('waitForStableStudy timing (fake clock and PACS)', () => {
  /** A fake PACS whose study instance count follows `counts` poll by poll (undefined: not there yet). */
  function fake(counts: (number | undefined | Error)[]) {
    let i = 0;
    const source: StudySource = {
      searchStudies: async () => {
        const c = counts[Math.min(i++, counts.length - 1)];
        if (c instanceof Error) throw c;
        if (c === undefined) return [];
        const ds: DicomJson = {
          [TAG.StudyInstanceUID]: { vr: 'UI', Value: ['2.25.5'] },
          [TAG.AccessionNumber]: { vr: 'SH', Value: ['A1'] },
          [TAG.NumberOfStudyRelatedInstances]: { vr: 'IS', Value: [c] },
        };
        return [ds];
      },
      searchSeries: async () => [],
    };
    let t = 0;
    const sleeps: number[] = [];
    const clock = {
      now: () => t,
      sleep: async (ms: number) => {
        sleeps.push(ms);
        t += ms;
      },
    };
    return { source, sleeps, clock };
  }

  it('backs off while nothing is there, resets when the count moves, and waits out stableMs', async () => {
    const f = fake([undefined, undefined, undefined, undefined, 10, 20, 20, 20, 20, 20]);
    const r = await waitForStableStudy(f.source, { accessionNumber: 'A1' }, { pollMs: 100, maxPollMs: 500, stableMs: 1000, deadlineMs: 60_000, ...f.clock });
    assert.deepEqual(r, { status: 'ready', studyInstanceUid: '2.25.5', instances: 20, matchedBy: 'accessionNumber', polls: 10, waitedMs: 2300 });
    // 100, 200, 400 while absent; count seen (10), then changes (20) → back to 100; then 200, 400 and a last wait
    // cut short to when the count has been unchanged for exactly stableMs.
    assert.deepEqual(f.sleeps, [100, 200, 400, 500, 100, 100, 200, 400, 300]);
  });

  it('never sleeps past the deadline and reports why it gave up', async () => {
    const f = fake([undefined]);
    const r = await waitForStableStudy(f.source, { accessionNumber: 'A1' }, { pollMs: 100, backoff: 3, stableMs: 1000, deadlineMs: 1000, ...f.clock });
    assert.deepEqual(f.sleeps, [100, 300, 600]);
    assert.deepEqual(r, {
      status: 'timeout',
      reason: "gave up after 1000 ms and 4 poll(s): no study with the order's AccessionNumber is in the PACS",
      polls: 4,
      waitedMs: 1000,
    });
    const busy = fake([5, 6, 7, 8, 9, 10, 11, 12]);
    const b = await waitForStableStudy(busy.source, { accessionNumber: 'A1' }, { pollMs: 100, stableMs: 1000, deadlineMs: 500, ...busy.clock });
    assert.equal(b.status, 'timeout');
    assert.ok(b.status === 'timeout');
    assert.match(b.reason, /: the study was still changing \(\d+ instances, unchanged for 0 ms of the 1000 ms required\)$/);
  });

  it('polls through retryable PACS errors but lets the others propagate', async () => {
    const flaky = fake([new PacsError('network', 'QIDO studies: connection refused'), 4, 4]);
    const r = await waitForStableStudy(flaky.source, { accessionNumber: 'A1' }, { pollMs: 100, stableMs: 150, deadlineMs: 5000, ...flaky.clock });
    assert.equal(r.status, 'ready');
    const denied = fake([new PacsError('client', 'QIDO studies: PACS answered HTTP 401', 401)]);
    await assert.rejects(
      waitForStableStudy(denied.source, { accessionNumber: 'A1' }, { pollMs: 100, stableMs: 150, deadlineMs: 5000, ...denied.clock }),
      (e: unknown) => e instanceof PacsError && e.status === 401,
    );
    const none = fake([undefined]);
    const u = await waitForStableStudy(none.source, {}, { pollMs: 100, stableMs: 150, deadlineMs: 5000, ...none.clock });
    assert.equal(u.status, 'unusable');
  });

  it('turns an order date into a StudyDate window', () => {
    assert.equal(dicomDate('2024-03-01T23:30:00-05:00', -1), '20240229');
    assert.equal(dicomDate('20241231', 1), '20250101');
    assert.equal(dicomDate('2024-02-30'), undefined);
    assert.equal(dicomDate('soon'), undefined);
  });
});
