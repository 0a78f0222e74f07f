import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { checkMessage } from '../../src/cli/hl7-check.js';
import { patientFromJson } from '../../src/dicomweb/study-patient.js';
import {
  comparePatientIdentity,
  DEFAULT_PATIENT_IDENTITY_RULE,
  type DicomPatient,
  decideIdentity,
  type OrderPatient,
  type PatientIdentityRule,
  sameName,
} from '../../src/domain/patient-identity.js';
import { parseMessage } from '../../src/hl7/message.js';
import { decodeMessageBytes } from '../../src/hl7/text.js';
import { extractOrders } from '../../src/orders/extract.js';
import { loadMappings, MappingsError, parseMappings } from '../../src/orders/mappings.js';

const mappings = loadMappings('mappings/orders.yaml');

const order = (o: Partial<OrderPatient> = {}): OrderPatient => ({
  identifiers: [{ value: 'MRN0042', authority: 'GENHOSP', type: 'MR' }],
  name: { family: 'Doe', given: ['Jane', 'Quinn'] },
  birthDate: '1970-01-02',
  sex: 'female',
  ...o,
});
const study = (s: Partial<DicomPatient> = {}): DicomPatient => ({ patientId: 'MRN0042', patientName: 'DOE^JANE^Q', patientBirthDate: '19700102', ...s });
const rule = (r: Partial<PatientIdentityRule> = {}): PatientIdentityRule => ({ ...DEFAULT_PATIENT_IDENTITY_RULE, ...r });

describe('patient identity: comparison', () => {
  it('matches the same patient written the DICOM and the HL7 way', () => {
    const c = comparePatientIdentity(order(), study(), rule());
    assert.equal(c.outcome, 'match');
    assert.deepEqual(c.compared, ['PatientID', 'PatientName', 'PatientBirthDate']);
    assert.deepEqual(c.differ, []);
    // No IssuerOfPatientID in the study: the issuer is skipped, not a problem.
    assert.deepEqual(
      c.skipped.map((p) => p.field),
      ['IssuerOfPatientID'],
    );
  });

  it('is tolerant of case, spaces, punctuation, accents, missing middle names and initials', () => {
    const same: [OrderPatient['name'], string][] = [
      [{ family: 'DOE', given: ['JANE'] }, 'Doe^Jane'],
      [{ family: 'doe', given: ['jane', 'quinn'] }, 'DOE^JANE'],
      [{ family: 'Doe', given: ['Jane'] }, 'DOE^JANE^QUINN'],
      [{ family: 'Doe', given: ['Jane', 'Q.'] }, 'DOE^JANE^QUINN'],
      [{ family: 'Doe', given: ['Jane', 'Quinn'] }, 'DOE^JANE QUINN'],
      [{ family: "O'Brien-Smith", given: ['Ann'] }, 'OBRIEN SMITH^ANN'],
      [{ family: 'Müller', given: ['Jörg'] }, 'MULLER^JORG'],
      [{ family: ' Doe ', given: [' Jane '] }, 'DOE^JANE^^MRS^'],
      [{ family: 'Yamada', given: ['Tarou'] }, 'Yamada^Tarou=山田^太郎=やまだ^たろう'],
    ];
    for (const [hl7, pn] of same) {
      const c = comparePatientIdentity(order({ name: hl7 }), study({ patientName: pn }), rule({ compare: ['name'] }));
      assert.equal(c.outcome, 'match', `${JSON.stringify(hl7)} vs ${pn}`);
    }
  });

  it('is not tolerant of different people', () => {
    const other: [OrderPatient['name'], string][] = [
      [{ family: 'Doe', given: ['Jane'] }, 'DOE^JOHN'],
      [{ family: 'Doe', given: ['Jane'] }, 'ROE^JANE'],
      [{ family: 'Doe', given: ['Jane', 'Quinn'] }, 'DOE^JANE^MARIE'],
      [{ family: 'Doe', given: ['Jane', 'Q'] }, 'DOE^JANE^M'],
      [{ family: 'Doe', given: ['J'] }, 'DOE^JANE'],
      [{ family: 'Doe', given: ['Jane'] }, 'DOE'],
      [{ family: 'Doe', given: ['Jane'] }, 'JANE^DOE'],
    ];
    for (const [hl7, pn] of other) {
      const c = comparePatientIdentity(order({ name: hl7 }), study({ patientName: pn }), rule({ compare: ['name'] }));
      assert.equal(c.outcome, 'mismatch', `${JSON.stringify(hl7)} vs ${pn}`);
      assert.deepEqual(c.differ, ['PatientName']);
    }
    assert.equal(sameName({ family: 'Doe', given: [] }, { family: 'DOE', given: [] }), true);
  });

  it('lists the fields that differ, never their values', () => {
    const c = comparePatientIdentity(
      order({ identifiers: [{ value: 'HOLD-MRN-9', authority: 'GENHOSP', type: 'MR' }], name: { family: 'Hold', given: ['Nine'] }, birthDate: '1999-09-09' }),
      study(),
      rule(),
    );
    assert.equal(c.outcome, 'mismatch');
    assert.deepEqual(c.differ, ['PatientID', 'PatientName', 'PatientBirthDate']);
    const d = decideIdentity(
      order({ identifiers: [{ value: 'HOLD-MRN-9', authority: 'GENHOSP', type: 'MR' }], birthDate: '1999-09-09' }),
      study(),
      rule(),
      'GENHOSP',
    );
    assert.equal(d.action, 'fail');
    assert.equal(
      d.message,
      'patient identity mismatch: PatientID, PatientBirthDate differ from the order (sender GENHOSP, rule default: compare id, issuer, name, birthDate)',
    );
    for (const v of ['HOLD-MRN-9', 'MRN0042', '1999', '1970', 'DOE', 'Doe', 'JANE']) assert.ok(!d.message?.includes(v), v);
  });

  it('accepts the study when any PID-3 repetition carries its PatientID, of the types configured', () => {
    const ids = [
      { value: 'SSN-1', authority: 'SSA', type: 'SS' },
      { value: 'MRN0042', authority: 'GENHOSP', type: 'MR' },
    ];
    assert.equal(comparePatientIdentity(order({ identifiers: ids }), study(), rule()).outcome, 'match');
    assert.equal(comparePatientIdentity(order({ identifiers: ids }), study({ patientId: 'SSN-1' }), rule({ identifierTypes: ['MR'] })).outcome, 'mismatch');
    const none = comparePatientIdentity(order({ identifiers: ids }), study(), rule({ identifierTypes: ['PI'] }));
    assert.equal(none.outcome, 'not-comparable');
    assert.match(none.notComparable[0]?.reason ?? '', /no PID-3 identifier of type PI/);
    // Exact: no case folding or trimming of leading zeros in identifiers.
    assert.equal(comparePatientIdentity(order(), study({ patientId: 'mrn0042' }), rule()).outcome, 'mismatch');
    assert.equal(comparePatientIdentity(order(), study({ patientId: 'MRN042' }), rule()).outcome, 'mismatch');
  });

  it('compares the issuer where both sides have one, through issuerMap', () => {
    const withIssuer = study({ issuerOfPatientId: 'GENHOSP' });
    assert.deepEqual(comparePatientIdentity(order(), withIssuer, rule()).compared, ['PatientID', 'IssuerOfPatientID', 'PatientName', 'PatientBirthDate']);
    const other = comparePatientIdentity(order(), study({ issuerOfPatientId: 'OTHERHOSP' }), rule());
    assert.deepEqual(other.differ, ['IssuerOfPatientID']);
    // The PACS calls GENHOSP's MRNs "PACS_GH": mapped, they agree.
    assert.equal(comparePatientIdentity(order(), study({ issuerOfPatientId: 'PACS_GH' }), rule({ issuerMap: { GENHOSP: 'PACS_GH' } })).outcome, 'match');
    // The universal ID of PID-3.4 (HD.2) counts as well.
    const oid = order({ identifiers: [{ value: 'MRN0042', authority: 'GENHOSP', authorityId: '1.2.3.4', type: 'MR' }] });
    assert.equal(comparePatientIdentity(oid, study({ issuerOfPatientId: '1.2.3.4' }), rule()).outcome, 'match');
    // No authority in the order: skipped, not a mismatch.
    const bare = comparePatientIdentity(order({ identifiers: [{ value: 'MRN0042', authority: '', type: '' }] }), withIssuer, rule());
    assert.equal(bare.outcome, 'match');
    assert.match(bare.skipped[0]?.reason ?? '', /no assigning authority/);
    // The issuer is not compared unless the rule says so.
    assert.equal(comparePatientIdentity(order(), study({ issuerOfPatientId: 'OTHERHOSP' }), rule({ compare: ['id', 'name', 'birthDate'] })).outcome, 'match');
  });

  it('birth dates: ISO against DICOM DA (and the old YYYY.MM.DD); a partial date cannot be compared', () => {
    assert.equal(comparePatientIdentity(order(), study({ patientBirthDate: '1970.01.02' }), rule()).outcome, 'match');
    assert.deepEqual(comparePatientIdentity(order(), study({ patientBirthDate: '19700103' }), rule()).differ, ['PatientBirthDate']);
    const partial = comparePatientIdentity(order(), study({ patientBirthDate: '1970' }), rule());
    assert.equal(partial.outcome, 'not-comparable');
    assert.deepEqual(
      partial.notComparable.map((p) => p.field),
      ['PatientBirthDate'],
    );
  });

  it('a field missing on either side is not comparable, which fails unless the rule ignores it', () => {
    const noId = study({ patientId: undefined });
    const c = comparePatientIdentity(order(), noId, rule());
    assert.equal(c.outcome, 'not-comparable');
    assert.deepEqual(c.notComparable, [{ field: 'PatientID', reason: 'the study has no PatientID' }]);
    const d = decideIdentity(order(), noId, rule(), 'GENHOSP');
    assert.equal(d.action, 'fail');
    assert.match(d.message ?? '', /^patient identity mismatch: not comparable: the study has no PatientID \(sender GENHOSP, rule default/);
    assert.equal(decideIdentity(order(), noId, rule({ notComparable: 'ignore' }), 'GENHOSP').action, 'proceed');
    assert.equal(decideIdentity(order({ birthDate: undefined }), study(), rule(), 'GENHOSP').action, 'fail');
    // ... but a study of which nothing at all could be compared is never accepted.
    const empty = decideIdentity(order(), {}, rule({ notComparable: 'ignore' }), 'GENHOSP');
    assert.equal(empty.action, 'fail');
    assert.match(empty.message ?? '', /the study has no PatientID; the study has no PatientName family name; the study has no PatientBirthDate/);
  });

  it('relaxed rules: name and birth date only; warn; off', () => {
    const otherMrn = study({ patientId: 'PACS-77' });
    assert.equal(decideIdentity(order(), otherMrn, rule(), 'RIS_A').action, 'fail');
    assert.equal(decideIdentity(order(), otherMrn, rule({ compare: ['name', 'birthDate'] }), 'RIS_A').action, 'proceed');
    // ... which still refuses another person.
    assert.equal(
      decideIdentity(order(), study({ patientId: 'PACS-77', patientBirthDate: '19800101' }), rule({ compare: ['name', 'birthDate'] }), 'RIS_A').action,
      'fail',
    );
    const warn = decideIdentity(order(), otherMrn, rule({ mode: 'warn', source: 'facilities.RIS_A.patientIdentity' }), 'RIS_A');
    assert.equal(warn.action, 'warn');
    assert.equal(
      warn.message,
      'patient identity mismatch: PatientID differs from the order (sender RIS_A, rule facilities.RIS_A.patientIdentity: compare id, issuer, name, birthDate; mode warn)',
    );
    const off = decideIdentity(order(), {}, rule({ mode: 'off' }), 'RIS_A');
    assert.deepEqual(off, { action: 'proceed', comparison: null });
  });
});

describe('patient identity: the two sides as read', () => {
  it('PID-3 keeps the assigning authority, namespace and universal ID', () => {
    const msg = [
      'MSH|^~\\&|EPIC|GENHOSP|CTGATE|RADIOLOGY|20261127101500||ORM^O01^ORM_O01|MSG1|P|2.5.1',
      'PID|1||MRN1^^^GENHOSP&1.2.840.99&ISO^MR~555^^^SSA^SS||DOE^JANE^Q||19700102|F',
      'ORC|NW|PLC1^EPIC',
      'OBR|1|PLC1^EPIC||71250^CT THORAX^C4|||||||||||||||ACC1',
    ].join('\r');
    const [o] = extractOrders(parseMessage(decodeMessageBytes(Buffer.from(msg))), mappings);
    assert.deepEqual(o?.patient.identifiers, [
      { value: 'MRN1', authority: 'GENHOSP', authorityId: '1.2.840.99', type: 'MR' },
      { value: '555', authority: 'SSA', type: 'SS' },
    ]);
    assert.deepEqual(o?.patient.name, { family: 'DOE', given: ['JANE', 'Q'] });
  });

  it('the study side from DICOM JSON (PN as its Alphabetic group; empty values absent)', () => {
    const p = patientFromJson({
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'DOE^JANE' }] },
      '00100020': { vr: 'LO', Value: ['MRN1'] },
      '00100021': { vr: 'LO', Value: ['GENHOSP'] },
      '00100030': { vr: 'DA', Value: [''] },
    });
    assert.deepEqual(p, { level: 'study', patientId: 'MRN1', issuerOfPatientId: 'GENHOSP', patientName: 'DOE^JANE' });
  });
});

describe('patient identity: mappings', () => {
  const doc = mappings.doc;
  const problems = (d: unknown): string[] => {
    try {
      parseMappings(d);
    } catch (e) {
      assert.ok(e instanceof MappingsError);
      return e.problems;
    }
    return [];
  };

  it('ships the defaults (id, issuer, name, birth date; enforced) and a per-sender rule', () => {
    const r = mappings.patientIdentity('GENHOSP');
    assert.deepEqual(r.compare, ['id', 'issuer', 'name', 'birthDate']);
    assert.equal(r.mode, 'enforce');
    assert.equal(r.notComparable, 'mismatch');
    assert.deepEqual(mappings.patientIdentity('EXAMPLE_RIS_HOSPITAL').compare, ['name', 'birthDate']);
    assert.equal(mappings.patientIdentity('EXAMPLE_RIS_HOSPITAL').source, 'facilities.EXAMPLE_RIS_HOSPITAL.patientIdentity');
  });

  it('without a patientIdentity section the default rule applies; a facility overrides key by key', () => {
    const { patientIdentity: _, ...rest } = doc;
    const m = parseMappings({ ...rest, facilities: { RIS_A: { patientIdentity: { mode: 'warn', issuerMap: { RISA: 'PACS_A' } } } } });
    assert.deepEqual(m.patientIdentity('GENHOSP'), DEFAULT_PATIENT_IDENTITY_RULE);
    const a = m.patientIdentity('RIS_A');
    assert.deepEqual(a.compare, DEFAULT_PATIENT_IDENTITY_RULE.compare);
    assert.equal(a.mode, 'warn');
    assert.deepEqual(a.issuerMap, { RISA: 'PACS_A' });
    assert.equal(a.source, 'facilities.RIS_A.patientIdentity');
    // Facilities are looked up as the other per-facility settings are (exact, then upper case).
    assert.equal(m.patientIdentity('ris_a').mode, 'warn');
    assert.equal(m.patientIdentity('RIS_B').mode, 'enforce');
  });

  it('validation errors name the bad key', () => {
    assert.match(problems({ ...doc, patientIdentity: { compare: ['id', 'dob'] } }).join('\n'), /^patientIdentity\.compare\.1: /m);
    assert.match(problems({ ...doc, patientIdentity: { compare: [] } }).join('\n'), /^patientIdentity\.compare: compare at least one/m);
    assert.match(
      problems({ ...doc, patientIdentity: { compare: ['issuer', 'name'] } }).join('\n'),
      /^patientIdentity\.compare: issuer is compared only together with id/m,
    );
    assert.match(problems({ ...doc, patientIdentity: { mode: 'lenient' } }).join('\n'), /^patientIdentity\.mode: /m);
    assert.match(problems({ ...doc, patientIdentity: { notComparable: 'maybe' } }).join('\n'), /^patientIdentity\.notComparable: /m);
    assert.match(problems({ ...doc, patientIdentity: { issuerMap: { GENHOSP: '' } } }).join('\n'), /^patientIdentity\.issuerMap\.GENHOSP: /m);
    assert.match(problems({ ...doc, patientIdentity: { overide: 'warn' } }).join('\n'), /^patientIdentity: .*overide/m);
    assert.match(
      problems({ ...doc, facilities: { RIS_A: { patientIdentity: { compare: ['name'], mode: 'warm' } } } }).join('\n'),
      /^facilities\.RIS_A\.patientIdentity\.mode: /m,
    );
  });
});

describe('patient identity: ctgate hl7 check', () => {
  const fixture = readFileSync('fixtures/hl7/orm-chest-ct.hl7');

  it("prints the sender's rule and the order's side of each compared field", () => {
    const r = checkMessage(fixture, mappings);
    assert.equal(r.patientIdentity?.sender, 'GENHOSP');
    assert.equal(r.patientIdentity?.rule, 'patientIdentity: compare id, issuer, name, birthDate');
    assert.deepEqual(
      r.patientIdentity?.fields.map((f) => [f.field, f.order]),
      [
        ['PatientID', ['MRN12345']],
        ['IssuerOfPatientID', ['GENHOSP']],
        ['PatientName', ['TEST^PATIENT^A']],
        ['PatientBirthDate', ['19800102']],
      ],
    );
    assert.match(r.patientIdentity?.fields[1]?.note ?? '', /only when the study has an IssuerOfPatientID/);
  });

  it('follows a relaxed per-sender rule, and says what cannot be compared', () => {
    const m = parseMappings({ ...mappings.doc, facilities: { GENHOSP: { patientIdentity: { compare: ['name', 'birthDate'], mode: 'warn' } } } });
    const noBirth = Buffer.from(fixture.toString('utf8').replace('||19800102|F', '|||F'));
    const r = checkMessage(noBirth, m);
    assert.equal(r.patientIdentity?.rule, 'facilities.GENHOSP.patientIdentity: compare name, birthDate; mode warn');
    assert.equal(r.patientIdentity?.mode, 'warn');
    assert.deepEqual(
      r.patientIdentity?.fields.map((f) => f.field),
      ['PatientName', 'PatientBirthDate'],
    );
    assert.match(r.patientIdentity?.fields[1]?.note ?? '', /no full birth date: not comparable, counts as a mismatch \(recorded on the job, mode warn\)/);
    // Not a chest CT: nothing to compare.
    assert.equal(
      checkMessage(Buffer.from(fixture.toString('utf8').replace('71250^CT THORAX WO CONTRAST^C4', '70450^CT HEAD^C4')), m).patientIdentity,
      undefined,
    );
  });
});
