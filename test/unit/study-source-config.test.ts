/** CTGATE_STUDY_SOURCE and the PACS DIMSE peer of the dimse source: defaults, and errors that name the bad key. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/index.js';

const throwsKey = (env: Record<string, string>, key: RegExp) =>
  assert.throws(
    () => loadConfig(env),
    (e: unknown) => e instanceof ConfigError && key.test(e.message),
  );

describe('study source configuration', () => {
  it('is the PACS over DICOMweb unless told otherwise', () => {
    assert.deepEqual(loadConfig({}).worker.studySource, { kind: 'dicomweb' });
    assert.deepEqual(loadConfig({ CTGATE_STUDY_SOURCE: 'DICOMweb' }).worker.studySource, { kind: 'dicomweb' });
  });

  it('received: the receive folder and its stable time, without the receiver itself (a worker)', () => {
    assert.deepEqual(loadConfig({ CTGATE_STUDY_SOURCE: 'received' }).worker.studySource, {
      kind: 'received',
      dir: '.data/dimse-receive',
      stableSeconds: 30,
      retentionHours: 72,
    });
    assert.deepEqual(loadConfig({ CTGATE_STUDY_SOURCE: 'received', CTGATE_DIMSE_RECEIVE_DIR: '/srv/rcv', CTGATE_DIMSE_STABLE_S: '5' }).worker.studySource, {
      kind: 'received',
      dir: '/srv/rcv',
      stableSeconds: 5,
      retentionHours: 72,
    });
  });

  it('dimse: the PACS peer, calling as CTGATE_DICOM_AE_TITLE', () => {
    const c = loadConfig({
      CTGATE_STUDY_SOURCE: 'dimse',
      CTGATE_PACS_DIMSE_HOST: 'pacs.local',
      CTGATE_PACS_DIMSE_CALLED_AE: 'PACS',
      CTGATE_DICOM_AE_TITLE: 'CTGATE1',
    }).worker.studySource;
    assert.deepEqual(c, {
      kind: 'dimse',
      pacs: { host: 'pacs.local', port: 104, calledAe: 'PACS', callingAe: 'CTGATE1', timeoutS: 30 },
      retrieve: 'get',
      moveDestinationAe: 'CTGATE1',
      receiveDir: '.data/dimse-receive',
      stableSeconds: 30,
      retentionHours: 72,
    });
    const move = loadConfig({
      CTGATE_STUDY_SOURCE: 'dimse',
      CTGATE_PACS_DIMSE_HOST: 'p',
      CTGATE_PACS_DIMSE_CALLED_AE: 'PACS',
      CTGATE_PACS_DIMSE_RETRIEVE: 'move',
    }).worker.studySource;
    assert.equal(move.kind === 'dimse' && move.retrieve, 'move');
    assert.equal(move.kind === 'dimse' && move.moveDestinationAe, 'CTGATE');
  });

  it('names the bad key', () => {
    throwsKey({ CTGATE_STUDY_SOURCE: 'qido' }, /^CTGATE_STUDY_SOURCE: expected one of dicomweb, received, dimse/);
    throwsKey({ CTGATE_STUDY_SOURCE: 'dimse', CTGATE_PACS_DIMSE_CALLED_AE: 'PACS' }, /^CTGATE_PACS_DIMSE_HOST: expected the PACS host/);
    throwsKey({ CTGATE_STUDY_SOURCE: 'dimse', CTGATE_PACS_DIMSE_HOST: 'pacs' }, /^CTGATE_PACS_DIMSE_CALLED_AE: expected the PACS AE title/);
    throwsKey({ CTGATE_STUDY_SOURCE: 'dimse', CTGATE_PACS_DIMSE_HOST: 'pacs', CTGATE_PACS_DIMSE_CALLED_AE: 'A\\B' }, /^CTGATE_PACS_DIMSE_CALLED_AE/);
    throwsKey(
      { CTGATE_STUDY_SOURCE: 'dimse', CTGATE_PACS_DIMSE_HOST: 'pacs', CTGATE_PACS_DIMSE_CALLED_AE: 'P', CTGATE_PACS_DIMSE_PORT: '0' },
      /^CTGATE_PACS_DIMSE_PORT/,
    );
    // A DIMSE peer configured for a source that does not use it.
    throwsKey({ CTGATE_PACS_DIMSE_HOST: 'pacs' }, /^CTGATE_STUDY_SOURCE: expected dimse when CTGATE_PACS_DIMSE_HOST is set/);
    throwsKey({ CTGATE_PACS_DIMSE_RETRIEVE: 'move' }, /^CTGATE_STUDY_SOURCE: expected dimse when CTGATE_PACS_DIMSE_RETRIEVE is set/);
    throwsKey(
      { CTGATE_STUDY_SOURCE: 'dimse', CTGATE_PACS_DIMSE_HOST: 'p', CTGATE_PACS_DIMSE_CALLED_AE: 'P', CTGATE_PACS_DIMSE_RETRIEVE: 'wado' },
      /^CTGATE_PACS_DIMSE_RETRIEVE: expected one of get, move/,
    );
    throwsKey(
      { CTGATE_STUDY_SOURCE: 'received', CTGATE_PACS_DIMSE_CALLED_AE: 'PACS' },
      /^CTGATE_STUDY_SOURCE: expected dimse when CTGATE_PACS_DIMSE_CALLED_AE is set/,
    );
  });
});
