import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/index.js';
import { type ParsedMessage, parseMessage, type Segment } from '../../src/hl7/message.js';
import type { ResultContext } from '../../src/results/context.js';
import { readAckReply } from '../../src/results/oru/ack-reply.js';
import { encodeOru, type OruOptions, oruControlId } from '../../src/results/oru/encode.js';
import { syntheticResult } from '../helpers/result-context.js';

const now = new Date('2026-11-27T10:05:00Z');
const opts = (ctx: ResultContext, extra: Partial<OruOptions> = {}): OruOptions => ({
  sendingApplication: 'CTGATE',
  sendingFacility: 'RADIOLOGY',
  controlId: oruControlId(ctx.jobId),
  now,
  version: '2.5.1',
  ...extra,
});

const obxs = (m: ParsedMessage): Segment[] => m.segments.filter((s) => s.type === 'OBX');
const obx = (m: ParsedMessage, code: string, subId = ''): Segment => {
  const s = obxs(m).find((x) => x.get(3) === code && x.get(4) === subId);
  assert.ok(s, `OBX ${code} present`);
  return s;
};

describe('ORU^R01 encoding', () => {
  let positive: ResultContext;
  let healthy: ResultContext;
  let nodule: ResultContext;
  before(() => {
    positive = syntheticResult({ seed: 7, kind: 'covid' }).context;
    healthy = syntheticResult({ seed: 8, kind: 'healthy' }).context;
    nodule = syntheticResult({ seed: 9, kind: 'nodule' }).context;
  });

  it('writes MSH, PID, PV1, ORC, OBR and OBX in order, readable by the project parser', () => {
    const text = encodeOru(positive, opts(positive));
    assert.ok(!text.includes('\n') && !text.endsWith('\r'));
    const m = parseMessage(text);
    const types = m.segments.map((s) => s.type);
    assert.deepEqual(types.slice(0, 5), ['MSH', 'PID', 'PV1', 'ORC', 'OBR']);
    assert.ok(types.slice(5).every((t) => t === 'OBX') && types.length > 10);
    assert.deepEqual(
      obxs(m).map((s) => s.get(1)),
      obxs(m).map((_, i) => String(i + 1)),
    );
  });

  it('fills MSH: sender, receiver (default: the order sender), type, control id, version, time', () => {
    const m = parseMessage(encodeOru(positive, opts(positive)));
    const msh = m.first('MSH') as Segment;
    assert.equal(msh.get(3), 'CTGATE');
    assert.equal(msh.get(4), 'RADIOLOGY');
    assert.equal(msh.get(5), 'EPIC');
    assert.equal(msh.get(6), 'GENHOSP');
    assert.equal(msh.get(7), '20261127100500+0000');
    assert.deepEqual(msh.repetitions(9)[0], ['ORU', 'R01', 'ORU_R01']);
    assert.equal(msh.get(10), oruControlId(positive.jobId));
    assert.equal(msh.get(11), 'P');
    assert.equal(msh.get(12), '2.5.1');
    assert.equal(msh.get(18), 'UNICODE UTF-8', 'MSH-18 character set');
    assert.equal(msh.get(19), '', 'MSH-19 (principal language) stays empty');
    const other = parseMessage(encodeOru(positive, opts(positive, { receivingApplication: 'EMR', receivingFacility: 'WARD' }))).first('MSH') as Segment;
    assert.equal(other.get(5), 'EMR');
    assert.equal(other.get(6), 'WARD');
  });

  it('copies the patient and the order numbers from the order', () => {
    const m = parseMessage(encodeOru(positive, opts(positive)));
    const pid = m.first('PID') as Segment;
    assert.deepEqual(pid.repetitions(3), [['MRN000123', '', '', 'GENHOSP', 'MR']]);
    assert.deepEqual(pid.repetitions(5)[0], ['Synthetic', 'Chest']);
    assert.equal(pid.get(7), '19700101');
    assert.equal(pid.get(8), 'O');
    assert.equal((m.first('PV1') as Segment).get(2), 'O');
    const orc = m.first('ORC') as Segment;
    assert.equal(orc.get(1), 'RE');
    assert.deepEqual(orc.repetitions(2)[0], ['PLC1001', 'EPIC']);
    assert.equal(orc.get(3), 'FIL1001');
    assert.deepEqual(orc.repetitions(12)[0], ['DR123', 'House', 'Gregory']);
    const obr = m.first('OBR') as Segment;
    assert.deepEqual(obr.repetitions(2)[0], ['PLC1001', 'EPIC']);
    assert.equal(obr.get(3), 'FIL1001');
    assert.deepEqual(obr.repetitions(4)[0], ['24627-2', 'CT Chest', 'LN']);
    assert.equal(obr.get(7), '20200315093000', 'observation time = study date/time');
    assert.deepEqual(obr.repetitions(16)[0], ['DR123', 'House', 'Gregory']);
    assert.equal(obr.get(18), 'ACC1001');
    assert.equal(obr.get(22), '20261127100000+0000');
    assert.equal(obr.get(25), 'P');
  });

  it('reports a positive: SNOMED impression, numbers with UCUM units, models, study UID and link', () => {
    const m = parseMessage(encodeOru(positive, opts(positive)));
    for (const s of obxs(m)) {
      assert.equal(s.get(11), 'P', `OBX-11 of ${s.get(3)}`);
      assert.equal(s.get(14), '20200315093000', `OBX-14 of ${s.get(3)}`);
    }
    const imp = obx(m, '121073');
    assert.equal(imp.get(2), 'CE');
    assert.deepEqual(imp.repetitions(5)[0], ['882784691000119100', 'Pneumonia caused by SARS-CoV-2', 'SCT']);
    assert.equal(imp.get(8), 'A');
    assert.equal(obx(m, '121077').get(2), 'TX');
    assert.match(obx(m, '121077').get(5), /consistent with COVID-19 pneumonia.*Probability 0\.930/);
    assert.equal(obx(m, 'PROB').get(2), 'NM');
    assert.equal(obx(m, 'PROB').get(5), '0.930');
    assert.equal(obx(m, 'THRESH').get(5), '0.613');
    const f = positive.analysis.findings;
    assert.ok(f);
    const vol = obx(m, 'LESVOL');
    assert.equal(vol.get(5), f.lesionVolumeMl.toFixed(2));
    assert.deepEqual(vol.repetitions(6)[0], ['mL', 'milliliter', 'UCUM']);
    const pct = obx(m, 'LUNGINV');
    assert.equal(pct.get(5), f.lungInvolvementPercent.total.toFixed(1));
    assert.deepEqual(pct.repetitions(6)[0], ['%', 'percent', 'UCUM']);
    assert.equal(obx(m, 'LUNGINV-L').get(5), f.lungInvolvementPercent.left.toFixed(1));
    assert.equal(obx(m, 'LUNGINV-R').get(5), f.lungInvolvementPercent.right.toFixed(1));
    assert.equal(obx(m, 'LESCOUNT').get(5), String(f.lesionCount));
    assert.equal(obx(m, '110180').get(5), positive.study.studyInstanceUid);
    assert.equal(obx(m, 'MODEL', '1').get(5), 'lung-threshold 1.0.0');
    assert.equal(obx(m, 'MODEL', '3').get(5), 'covid-resnet 0.1.0');
    const link = obx(m, 'RESULTURL');
    assert.equal(link.get(2), 'RP');
    assert.deepEqual(link.repetitions(5)[0], ['http://127.0.0.1:8080/studies/job-7', 'CTGATE', 'TEXT', 'HTML']);
  });

  it('reports no significant opacity as no abnormality, and other opacity as an abnormal lung finding', () => {
    const m = parseMessage(encodeOru(healthy, opts(healthy)));
    assert.equal(healthy.analysis.findings?.lesionCount, 0);
    assert.equal(healthy.analysis.category, 'no-significant-opacity');
    assert.deepEqual(obx(m, '121073').repetitions(5)[0], ['281900007', 'No abnormality detected', 'SCT']);
    assert.equal(obx(m, '121073').get(8), 'N');
    assert.match(obx(m, '121077').get(5), /no significant lung opacity; no CT pattern of COVID-19 pneumonia.*No lesion found/);
    assert.equal(obx(m, 'PROB').get(5), '0.040');
    const n = parseMessage(encodeOru(nodule, opts(nodule)));
    assert.ok((nodule.analysis.findings?.lesionCount ?? 0) > 0);
    assert.equal(nodule.analysis.category, 'other-opacity');
    assert.deepEqual(obx(n, '121073').repetitions(5)[0], ['301230006', 'Lung finding', 'SCT']);
    assert.equal(obx(n, '121073').get(8), 'A');
    assert.match(obx(n, '121077').get(5), /lung opacity, not COVID-19-like: another cause/);
  });

  it('never codes other opacity as COVID-19 pneumonia, even just under the threshold', () => {
    const ctx: ResultContext = {
      ...nodule,
      analysis: { ...nodule.analysis, probability: nodule.analysis.threshold - 0.001, verdict: 'negative', category: 'other-opacity' },
    };
    const text = encodeOru(ctx, opts(ctx));
    for (const sars of ['882784691000119100', '840539006', 'SARS-CoV-2']) assert.ok(!text.includes(sars), `${sars} in an other-opacity ORU`);
    assert.doesNotMatch(obx(parseMessage(text), '121077').get(5), /consistent with COVID-19/);
    assert.throws(() => encodeOru({ ...ctx, analysis: { ...ctx.analysis, verdict: 'positive' } }, opts(ctx)), /other-opacity with verdict positive/);
  });

  it('reports a not-assessable study with its reason and without probability or measurements', () => {
    const ctx: ResultContext = {
      ...positive,
      analysis: {
        ...positive.analysis,
        verdict: 'not-assessable',
        reason: 'no axial series of 1-5 mm slices',
        probability: null,
        findings: null,
        lesionMask: null,
      },
    };
    const m = parseMessage(encodeOru(ctx, opts(ctx)));
    const codes = obxs(m).map((s) => s.get(3));
    for (const absent of ['121073', 'PROB', 'THRESH', 'LESVOL', 'LUNGINV', 'LESCOUNT']) assert.ok(!codes.includes(absent), `${absent} absent`);
    assert.equal(obx(m, 'NOTASSESS').get(5), 'no axial series of 1-5 mm slices');
    assert.match(obx(m, '121077').get(5), /not assessable: no axial series/);
    assert.equal(obx(m, 'MODEL', '1').get(5), 'lung-threshold 1.0.0');
  });

  it('escapes the HL7 delimiters in every value, and they read back unchanged', () => {
    const url = 'https://ctgate.example/r?job=a&b=c^d~e\\f|g';
    const family = "O'Brien|Smith^Jr~&\\";
    const ctx: ResultContext = {
      ...positive,
      order: {
        ...positive.order,
        placerOrderNumber: 'P|1^2',
        accessionNumber: 'A&1~2',
        patient: { ...positive.order.patient, name: { family, given: ['Ann', 'Marie'] } },
      },
      analysis: { ...positive.analysis, models: [{ name: 'net^x', version: '1|2' }] },
      links: { ...positive.links, resultPageUrl: url },
    };
    const text = encodeOru(ctx, opts(ctx));
    assert.ok(text.includes('https://ctgate.example/r?job=a\\T\\b=c\\S\\d\\R\\e\\E\\f\\F\\g^CTGATE^TEXT^HTML'));
    const m = parseMessage(text);
    assert.equal(m.segments.length, text.split('\r').length);
    assert.equal(obx(m, 'RESULTURL').get(5), url);
    assert.deepEqual((m.first('PID') as Segment).repetitions(5)[0], [family, 'Ann', 'Marie']);
    assert.equal((m.first('OBR') as Segment).get(2), 'P|1^2');
    assert.equal((m.first('OBR') as Segment).get(18), 'A&1~2');
    assert.equal(obx(m, 'MODEL', '1').get(5), 'net^x 1|2');
  });

  it('is deterministic: same context, control id and time give the same bytes', () => {
    const a = encodeOru(positive, opts(positive));
    const again = syntheticResult({ seed: 7, kind: 'covid' }).context;
    assert.equal(encodeOru(again, opts(again)), a);
    const b = encodeOru(positive, opts(positive, { controlId: oruControlId(positive.jobId, 2) }));
    const differing = a.split('\r').filter((line, i) => line !== b.split('\r')[i]);
    assert.equal(differing.length, 1);
    assert.ok(differing[0]?.startsWith('MSH'));
  });

  it('derives the control id from the job id: stable, at most 20 characters, the sequence at the end', () => {
    const id = oruControlId('job-7-covid');
    assert.equal(id, oruControlId('job-7-covid'));
    assert.match(id, /^R[0-9A-F]{14}-1$/);
    assert.equal(oruControlId('job-7-covid', 2), id.replace(/-1$/, '-2'));
    assert.notEqual(oruControlId('job-8-covid'), id);
    assert.ok(oruControlId('x', 999).length <= 20);
    assert.throws(() => oruControlId('x', 0), RangeError);
  });
});

describe('ACK reading', () => {
  it('reads MSA-1/2 and the reason from MSA-3, ERR-8 (2.5) or ERR-1 (2.4)', () => {
    const msh = 'MSH|^~\\&|EMR|H|CTGATE|R|20261127||ACK^R01^ACK|A1|P|2.5.1';
    assert.deepEqual(readAckReply(`${msh}\rMSA|aa|R1-1`), { code: 'AA', controlId: 'R1-1', reason: '' });
    assert.equal(readAckReply(`${msh}\rMSA|AE|R1-1|Busy \\T\\ down`).reason, 'Busy & down');
    assert.equal(readAckReply(`${msh}\rMSA|AR|R1-1\rERR|||207^Application internal error^HL70357|E||||Unknown patient`).reason, 'Unknown patient');
    const v24 = msh.replace('2.5.1', '2.4');
    assert.equal(readAckReply(`${v24}\rMSA|AE|R1-1\rERR|OBX^1^5^102&Data type error&HL70357`).reason, 'Data type error');
    assert.throws(() => readAckReply(msh));
  });
});

describe('ORU configuration', () => {
  it('is off without CTGATE_ORU_HOST, defaults MSH-3/4 to the app and facility names, and names bad keys', () => {
    assert.equal(loadConfig({}).oru, undefined);
    const c = loadConfig({ CTGATE_ORU_HOST: 'emr.local', CTGATE_APP_NAME: 'CTG', CTGATE_ORU_RECEIVING_FACILITY: 'WARD' }).oru;
    assert.equal(c?.port, 2575);
    assert.equal(c?.sendingApplication, 'CTG');
    assert.equal(c?.receivingFacility, 'WARD');
    assert.equal(c?.tls, false);
    assert.throws(() => loadConfig({ CTGATE_ORU_HOST: 'h', CTGATE_ORU_PORT: '0' }), /CTGATE_ORU_PORT/);
    assert.throws(() => loadConfig({ CTGATE_ORU_HOST: 'h', CTGATE_ORU_TLS_CA_FILE: '/ca.pem' }), /CTGATE_ORU_TLS: expected true/);
    assert.throws(() => loadConfig({ CTGATE_ORU_TLS: 'on', CTGATE_ORU_TLS_CERT_FILE: '/c.pem' }), /CTGATE_ORU_TLS_KEY_FILE/);
    assert.throws(() => loadConfig({ CTGATE_ORU_BACKOFF_MS: '5000', CTGATE_ORU_BACKOFF_MAX_MS: '100' }), /CTGATE_ORU_BACKOFF_MAX_MS/);
  });
});
