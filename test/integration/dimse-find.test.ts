/**
 * `ctgate series explain --dimse`: C-FIND through DCMTK's findscu against Orthanc's DICOM server over loopback (the
 * study is stored over DICOMweb only to set the test up). By accession it finds the study, lists its series with the
 * attributes the rules read and chooses the CT volume (exit 0), the same by StudyInstanceUID; the patient attributes
 * come from the study-level answer. An unknown accession is exit 3; a wrong called AE is a rejected association,
 * exit 1, with the reason and without the host.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { seriesExplainCommand } from '../../src/cli/series-explain.js';
import { DimseError } from '../../src/dicom/dcmtk.js';
import { findSeries, findStudies } from '../../src/dicom/find.js';
import { writeCtSeries } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { TestOrthanc } from '../helpers/orthanc.js';

describe('series explain over DIMSE (C-FIND with DCMTK findscu, Orthanc DICOM server)', () => {
  const pacs = new TestOrthanc({ dicom: { aet: 'PACSFIND', checkCalledAet: true, alwaysAllowFind: true } });
  let studyUid = '';
  let seriesUid = '';

  before(async () => {
    await pacs.start();
    const p = generateChestCt({ seed: 19, kind: 'covid', size: [32, 32, 24], spacing: [10, 10, 5] });
    const ct = writeCtSeries(p.volume, { seed: 19, accessionNumber: 'ACC-DIMSE-1', patientId: 'MRN-DIMSE', seriesDescription: 'LUNG 5.0' });
    studyUid = ct.studyInstanceUid;
    seriesUid = ct.seriesInstanceUid;
    await pacs.client().store(ct.files.map((f) => f.bytes));
  });
  after(async () => {
    await pacs.stop();
  });

  const run = async (...args: string[]) => {
    let out = '';
    let err = '';
    const code = await seriesExplainCommand(args, {
      out: (t) => {
        out += t;
      },
      err: (t) => {
        err += t;
      },
    });
    return { code, out, err };
  };
  const dimse = () => ['--dimse', `127.0.0.1:${pacs.dicomPort}`, '--called-ae', 'PACSFIND'];

  it('findStudies / findSeries return the study, its patient and the series attributes the rules read', async () => {
    const peer = { host: '127.0.0.1', port: pacs.dicomPort, calledAe: 'PACSFIND', callingAe: 'CTGATE', timeoutS: 5 };
    const studies = await findStudies(peer, { accessionNumber: 'ACC-DIMSE-1' });
    assert.equal(studies.length, 1);
    assert.equal(studies[0]?.studyInstanceUid, studyUid);
    assert.equal(studies[0]?.patientId, 'MRN-DIMSE');
    assert.equal(studies[0]?.numberOfStudyRelatedInstances, 24);
    const series = await findSeries(peer, studyUid);
    assert.equal(series.length, 1);
    assert.equal(series[0]?.seriesInstanceUid, seriesUid);
    assert.equal(series[0]?.modality, 'CT');
    assert.equal(series[0]?.numberOfSeriesRelatedInstances, 24);
    assert.deepEqual(await findStudies(peer, { accessionNumber: 'ACC-NOT-THERE' }), []);
  });

  it('by accession: finds the study, lists the series and chooses it (exit 0); by StudyInstanceUID too', async () => {
    const r = await run(...dimse(), '--accession', 'ACC-DIMSE-1');
    assert.equal(r.code, 0, r.out + r.err);
    assert.match(r.out, new RegExp(`^Study ${studyUid.replace(/\./g, '\\.')} \\(found by accessionNumber, C-FIND\\); 1 series`, 'm'));
    assert.match(r.out, /LUNG 5\.0 +5 +24 .*ORIGINAL\\PRIMARY\\AXIAL +CHOSEN/);
    assert.match(r.out, new RegExp(`^Chosen: series 1 "LUNG 5\\.0" \\(${seriesUid.replace(/\./g, '\\.')}\\)$`, 'm'));
    assert.match(r.out, /^ {2}PatientID +present$/m);
    assert.ok(!r.out.includes('MRN-DIMSE'), 'no patient values without --show-patient');

    const j = await run(...dimse(), '--study', studyUid, '--json', '--show-patient');
    assert.equal(j.code, 0, j.out + j.err);
    const report = JSON.parse(j.out);
    assert.equal(report.via, 'dimse');
    assert.equal(report.chosen, seriesUid);
    assert.equal(report.study.matchedBy, 'studyInstanceUid');
    assert.equal(report.study.instances, 24);
    assert.deepEqual(report.patient.fields[0], { field: 'PatientID', present: true, value: 'MRN-DIMSE' });
    assert.ok(Array.isArray(report.unknownAttributes));
  });

  it('an unknown accession is exit 3', async () => {
    const r = await run(...dimse(), '--accession', 'ACC-NOT-THERE');
    assert.equal(r.code, 3, r.out + r.err);
    assert.match(r.out, /^Study not-found: no study with that AccessionNumber is in the PACS \(C-FIND\)$/m);
  });

  it('a wrong called AE is a rejected association: exit 1 with the reason, no host; usage errors exit 1', async () => {
    const r = await run('--dimse', `127.0.0.1:${pacs.dicomPort}`, '--called-ae', 'NOT-PACS', '--accession', 'ACC-DIMSE-1');
    assert.equal(r.code, 1, r.out + r.err);
    assert.match(r.err, /DIMSE error \(rejected\): the PACS rejected the association for C-FIND \(STUDY\): Called AE Title Not Recognized/);
    assert.ok(!r.err.includes('127.0.0.1'));
    const e = await findStudies(
      { host: '127.0.0.1', port: pacs.dicomPort, calledAe: 'NOT-PACS', callingAe: 'CTGATE', timeoutS: 5 },
      { accessionNumber: 'X' },
    ).catch((x: unknown) => x);
    assert.ok(e instanceof DimseError && e.kind === 'rejected' && !e.retryable);

    for (const bad of [
      ['--dimse', '127.0.0.1', '--called-ae', 'PACSFIND', '--accession', 'A'],
      ['--dimse', `127.0.0.1:${pacs.dicomPort}`, '--accession', 'A'],
      [...dimse(), '--accession', 'ACC*'],
      [...dimse(), '--pacs', pacs.dicomweb, '--accession', 'A'],
    ]) {
      const u = await run(...bad);
      assert.equal(u.code, 1, bad.join(' '));
      assert.match(u.err, /usage:/);
    }
  });
});
