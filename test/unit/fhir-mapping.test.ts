import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Bundle, DiagnosticReport, FhirResource, ImagingStudy, Observation, Patient, ServiceRequest } from 'fhir/r4.js';
import type { ResultContext } from '../../src/results/context.js';
import { buildResultBundle } from '../../src/results/fhir/bundle.js';
import { FhirMappingError } from '../../src/results/fhir/input.js';
import { loadFhirMappings, parseFhirMappings, ResultMappingsError } from '../../src/results/fhir/mappings.js';
import { fhirProblems } from '../helpers/fhir-validate.js';
import { syntheticResult } from '../helpers/result-context.js';

const maps = loadFhirMappings('mappings/results.yaml');
const positive = syntheticResult({ seed: 7, kind: 'covid' }).context;
const healthy = syntheticResult({ seed: 8, kind: 'healthy' }).context;
const pneumonia = syntheticResult({ seed: 9, kind: 'lobar-pneumonia' }).context;
const SEG = { seriesInstanceUid: '2.25.1234567890', sopInstanceUid: '2.25.1234567891', seriesNumber: 900 };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function notAssessable(ctx: ResultContext): ResultContext {
  return {
    ...ctx,
    jobId: `${ctx.jobId}-na`,
    analysis: {
      ...ctx.analysis,
      verdict: 'not-assessable',
      reason: 'no axial CT series of 1–5 mm slices',
      probability: null,
      findings: null,
      lesionMask: null,
    },
    keyImages: [],
  };
}

const resources = (b: Bundle) => (b.entry ?? []).map((e) => e.resource as FhirResource);
const ofType = <T extends FhirResource>(b: Bundle, t: T['resourceType']) => resources(b).filter((r): r is T => r.resourceType === t);
const one = <T extends FhirResource>(b: Bundle, t: T['resourceType']): T => {
  const all = ofType<T>(b, t);
  assert.equal(all.length, 1, `one ${t}`);
  return all[0] as T;
};
const obsByCode = (b: Bundle, code: string) => ofType<Observation>(b, 'Observation').find((o) => o.code.coding?.[0]?.code === code);

describe('FHIR result bundle', () => {
  it('validates with Medplum and the FHIR R4 JSON schema, for every kind of result', () => {
    const cases = [
      buildResultBundle(positive, maps, { seg: SEG }),
      buildResultBundle(positive, maps, { seg: SEG, keyImages: { seriesInstanceUid: '2.25.42', instances: 3 }, srSeriesInstanceUid: '2.25.43' }),
      buildResultBundle(healthy, maps),
      buildResultBundle(pneumonia, maps),
      buildResultBundle(notAssessable(positive), maps),
    ];
    for (const b of cases) {
      const problems = [...fhirProblems(b), ...resources(b).flatMap((r) => fhirProblems(r))];
      assert.deepEqual(problems, []);
    }
  });

  it('lists the key-image (OT) and measurement-report (SR) series in the ImagingStudy when stored', () => {
    const is = one<ImagingStudy>(
      buildResultBundle(positive, maps, { seg: SEG, keyImages: { seriesInstanceUid: '2.25.42', instances: 3 }, srSeriesInstanceUid: '2.25.43' }),
      'ImagingStudy',
    );
    assert.deepEqual(
      is.series?.map((s) => [s.modality.code, s.numberOfInstances]),
      [
        ['CT', positive.series.slices.length],
        ['SEG', 1],
        ['OT', 3],
        ['SR', 1],
      ],
    );
    assert.deepEqual(
      is.modality?.map((m) => m.code),
      ['CT', 'SEG', 'OT', 'SR'],
    );
    assert.equal(is.numberOfSeries, 4);
  });

  it('catches broken resources (the validators are live)', () => {
    const b = buildResultBundle(positive, maps);
    const dr = structuredClone(one<DiagnosticReport>(b, 'DiagnosticReport'));
    (dr as { status: string }).status = 'draft';
    assert.ok(fhirProblems(dr).some((p) => p.includes('schema')));
    assert.ok(fhirProblems({ ...dr, status: 'preliminary', conclusionText: 'x' } as DiagnosticReport).some((p) => p.includes('medplum')));
  });

  it('is deterministic, with ids from business keys and no patient data in ids or URLs', () => {
    const a = buildResultBundle(positive, maps, { seg: SEG });
    assert.deepEqual(buildResultBundle(positive, maps, { seg: SEG }), a);
    const rerun = buildResultBundle({ ...positive, jobId: 'job-other' }, maps);
    const ids = (b: Bundle, t: string) =>
      resources(b)
        .filter((r) => r.resourceType === t)
        .map((r) => r.id);
    assert.deepEqual(ids(rerun, 'ImagingStudy'), ids(a, 'ImagingStudy'), 'same study, same ImagingStudy');
    assert.deepEqual(ids(rerun, 'Device'), ids(a, 'Device'), 'same models, same Device');
    assert.notDeepEqual(ids(rerun, 'DiagnosticReport'), ids(a, 'DiagnosticReport'), 'another job, another report');
    const newModel = buildResultBundle({ ...positive, analysis: { ...positive.analysis, models: [{ name: 'covid-resnet', version: '0.2.0' }] } }, maps);
    assert.notDeepEqual(ids(newModel, 'DiagnosticReport'), ids(a, 'DiagnosticReport'), 'another model version, another report');
    assert.notDeepEqual(ids(newModel, 'Observation'), ids(a, 'Observation'));

    const phi = ['MRN000123', 'PLC1001', 'ACC1001', 'Synthetic', positive.study.studyInstanceUid];
    for (const e of a.entry ?? []) {
      const id = e.resource?.id;
      if (id) assert.match(id, UUID);
      assert.match(e.fullUrl ?? '', /^urn:uuid:/);
      for (const p of phi) {
        assert.ok(!(e.fullUrl ?? '').includes(p) && !(e.request?.url ?? '').includes(p), `${p} in ${e.fullUrl} ${e.request?.url}`);
      }
    }
  });

  it('matches the patient by identifier and assigning authority, without overwriting the chart', () => {
    const b = buildResultBundle(positive, maps);
    const entry = (b.entry ?? []).find((e) => e.resource?.resourceType === 'Patient');
    assert.equal(entry?.request?.method, 'POST');
    assert.equal(decodeURIComponent(entry?.request?.ifNoneExist ?? ''), 'identifier=urn:ctgate:id:GENHOSP|MRN000123');
    const p = entry?.resource as Patient;
    assert.deepEqual(p.identifier?.[0]?.type?.coding?.[0], {
      system: 'http://terminology.hl7.org/CodeSystem/v2-0203',
      code: 'MR',
      display: 'Medical record number',
    });
    assert.equal(p.identifier?.[0]?.assigner?.display, 'GENHOSP');
    // A site's own system for an authority wins over the template.
    const site = parseFhirMappings({ fhir: { ...maps.doc, identifierSystems: { ...maps.doc.identifierSystems, patient: { genhosp: 'urn:oid:1.2.3.4' } } } });
    const sb = buildResultBundle(positive, site);
    assert.match(decodeURIComponent(sb.entry?.[0]?.request?.ifNoneExist ?? ''), /^identifier=urn:oid:1\.2\.3\.4\|MRN000123$/);
    assert.throws(
      () => buildResultBundle({ ...positive, order: { ...positive.order, patient: { ...positive.order.patient, identifiers: [] } } }, maps),
      FhirMappingError,
    );
  });

  it('types the order identifiers PLAC/FILL/ACSN and links order, study, observations and report', () => {
    const b = buildResultBundle(positive, maps, { seg: SEG });
    const sr = one<ServiceRequest>(b, 'ServiceRequest');
    const typed = Object.fromEntries((sr.identifier ?? []).map((i) => [i.type?.coding?.[0]?.code, i.value]));
    assert.deepEqual(typed, { PLAC: 'PLC1001', FILL: 'FIL1001', ACSN: 'ACC1001' });
    assert.ok((sr.identifier ?? []).every((i) => i.type?.coding?.[0]?.system === 'http://terminology.hl7.org/CodeSystem/v2-0203'));
    assert.equal(sr.intent, 'order');
    assert.equal(sr.status, 'active');
    assert.deepEqual(sr.code?.coding?.[0], { system: 'http://loinc.org', code: '24627-2', display: 'CT Chest' });
    assert.equal(sr.authoredOn, '2026-11-27T09:30:00+00:00');
    assert.equal(sr.requester?.identifier?.value, 'DR123');

    const fullUrl = (t: string) => (b.entry ?? []).find((e) => e.resource?.resourceType === t)?.fullUrl;
    const is = one<ImagingStudy>(b, 'ImagingStudy');
    assert.deepEqual(is.identifier?.[0], { system: 'urn:dicom:uid', value: `urn:oid:${positive.study.studyInstanceUid}` });
    assert.equal(is.status, 'available');
    assert.equal(is.basedOn?.[0]?.reference, fullUrl('ServiceRequest'));
    assert.equal(is.endpoint?.[0]?.reference, fullUrl('Endpoint'));
    assert.deepEqual(
      is.series?.map((s) => [s.uid, s.modality.system, s.modality.code]),
      [
        [positive.series.seriesInstanceUid, 'http://dicom.nema.org/resources/ontology/DCM', 'CT'],
        [SEG.seriesInstanceUid, 'http://dicom.nema.org/resources/ontology/DCM', 'SEG'],
      ],
    );
    const endpoint = resources(b).find((r) => r.resourceType === 'Endpoint');
    assert.equal(endpoint?.resourceType === 'Endpoint' && endpoint.connectionType.code, 'dicom-wado-rs');
    assert.equal(endpoint?.resourceType === 'Endpoint' && endpoint.address, positive.links.dicomWebBaseUrl);

    const dr = one<DiagnosticReport>(b, 'DiagnosticReport');
    const obs = ofType<Observation>(b, 'Observation');
    assert.equal(obs.length, 4);
    for (const o of obs) {
      assert.equal(o.status, 'preliminary');
      assert.equal(o.category?.[0]?.coding?.[0]?.code, 'imaging');
      assert.equal(o.device?.reference, fullUrl('Device'));
      assert.equal(o.derivedFrom?.[0]?.reference, fullUrl('ImagingStudy'));
      assert.equal(o.subject?.reference, fullUrl('Patient'));
      assert.equal(o.basedOn?.[0]?.reference, fullUrl('ServiceRequest'));
    }
    const obsUrls = (b.entry ?? []).filter((e) => e.resource?.resourceType === 'Observation').map((e) => e.fullUrl);
    assert.deepEqual(
      dr.result?.map((r) => r.reference),
      obsUrls,
    );
    assert.equal(dr.imagingStudy?.[0]?.reference, fullUrl('ImagingStudy'));
  });

  it('codes a positive result: LOINC report, SNOMED conclusion, POS interpretation, UCUM units', () => {
    const b = buildResultBundle(positive, maps);
    const dr = one<DiagnosticReport>(b, 'DiagnosticReport');
    assert.equal(dr.status, 'preliminary');
    assert.deepEqual(dr.category?.[0]?.coding?.[0], { system: 'http://terminology.hl7.org/CodeSystem/v2-0074', code: 'RAD', display: 'Radiology' });
    assert.equal(dr.code.coding?.[0]?.code, '24627-2');
    assert.equal(dr.conclusionCode?.[0]?.coding?.[0]?.code, '882784691000119100');
    const f = positive.analysis.findings;
    assert.ok(f);
    assert.equal(
      dr.conclusion,
      `AI screening (not for clinical use): COVID-19 pneumonia pattern likely — probability 0.93, lesions ${f.lesionVolumeMl.toFixed(1)} mL, ${f.lungInvolvementPercent.total.toFixed(1)} % of lung${f.bilateral ? ', bilateral' : ''}`.replace(
        / 0\.0 %/,
        ' <0.1 %',
      ),
    );
    const screening = obsByCode(b, 'covid19-pneumonia-pattern');
    assert.equal(screening?.interpretation?.[0]?.coding?.[0]?.code, 'POS');
    assert.equal(screening?.valueCodeableConcept?.coding?.[0]?.code, '260373001');
    const volume = obsByCode(b, 'lung-lesion-volume');
    assert.deepEqual([volume?.valueQuantity?.system, volume?.valueQuantity?.code], ['http://unitsofmeasure.org', 'mL']);
    assert.equal(obsByCode(b, 'lung-involvement')?.valueQuantity?.code, '%');
    assert.equal(obsByCode(b, 'covid19-pneumonia-probability')?.valueQuantity?.value, 0.93);

    const [png, html] = [dr.presentedForm?.[0], dr.presentedForm?.at(-1)];
    assert.equal(png?.contentType, 'image/png');
    assert.deepEqual([...Buffer.from(png?.data ?? '', 'base64').subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
    assert.equal(html?.contentType, 'text/html');
    const page = Buffer.from(html?.data ?? '', 'base64').toString('utf8');
    assert.ok(page.includes('COVID-19 pneumonia pattern likely') && page.includes('data:image/png;base64,'));
  });

  it('codes negatives by category: NEG; "no abnormality" only without significant opacity, else a lung finding', () => {
    for (const [ctx, category] of [
      [healthy, 'no-significant-opacity'],
      [pneumonia, 'other-opacity'],
    ] as const) {
      assert.equal(ctx.analysis.verdict, 'negative');
      assert.equal(ctx.analysis.category, category);
      const b = buildResultBundle(ctx, maps);
      const dr = one<DiagnosticReport>(b, 'DiagnosticReport');
      const screening = obsByCode(b, 'covid19-pneumonia-pattern');
      assert.equal(screening?.interpretation?.[0]?.coding?.[0]?.code, 'NEG');
      assert.equal(screening?.valueCodeableConcept?.coding?.[0]?.code, '260415000');
      const opacity = screening?.component?.find((c) => c.code.coding?.[0]?.code === 'lung-opacity');
      assert.equal(opacity?.valueCodeableConcept?.coding?.[0]?.code, category === 'other-opacity' ? '260373001' : '260415000');
      assert.equal(dr.conclusionCode?.length, 1);
      assert.deepEqual(
        dr.conclusionCode?.[0]?.coding?.map((c) => [c.system, c.code]),
        [['http://snomed.info/sct', category === 'other-opacity' ? '301230006' : '281900007']],
      );
      if (category === 'no-significant-opacity') {
        assert.match(dr.conclusion ?? '', /no significant lung opacity, COVID-19 pneumonia pattern not detected — probability 0\.04/);
        assert.match(dr.conclusion ?? '', /no lesions found$/);
      } else {
        assert.match(dr.conclusion ?? '', /lung opacity, not COVID-19-like .* — probability 0\.04, lesions \d+\.\d mL/);
      }
    }
  });

  it('never codes other opacity as COVID-19, whatever the probability under the threshold', () => {
    // A lobar pneumonia the classifier scores just under its threshold (cap002 scored 0.85 with the 0.2 models).
    const ctx: ResultContext = {
      ...pneumonia,
      analysis: { ...pneumonia.analysis, probability: pneumonia.analysis.threshold - 0.001, verdict: 'negative', category: 'other-opacity' },
    };
    const b = buildResultBundle(ctx, maps);
    const text = JSON.stringify(b);
    for (const sars of ['882784691000119100', '840539006']) assert.ok(!text.includes(sars), `SARS-CoV-2 code ${sars} in an other-opacity bundle`);
    assert.equal(obsByCode(b, 'covid19-pneumonia-pattern')?.valueCodeableConcept?.coding?.[0]?.code, '260415000');
    assert.equal(one<DiagnosticReport>(b, 'DiagnosticReport').conclusionCode?.[0]?.coding?.[0]?.code, '301230006');
    const dr = one<DiagnosticReport>(b, 'DiagnosticReport');
    assert.doesNotMatch(dr.conclusion ?? '', /COVID-19 pneumonia pattern likely/);
    assert.deepEqual(fhirProblems(b), []);
    // An inconsistent analysis (other opacity but a positive verdict) is refused, not coded.
    assert.throws(() => buildResultBundle({ ...ctx, analysis: { ...ctx.analysis, verdict: 'positive' } }, maps), /other-opacity with verdict positive/);
  });

  it('refuses mappings that would code other opacity or no abnormality as the COVID-19 conclusion', () => {
    const doc = structuredClone(maps.doc) as unknown as { conclusions: Record<string, { code: string }> };
    (doc.conclusions.otherOpacity as { code: string }).code = '882784691000119100';
    assert.throws(
      () => parseFhirMappings({ fhir: doc }, 'bad.yaml'),
      (e: unknown) => e instanceof ResultMappingsError && /fhir\.conclusions\.otherOpacity\.code: must differ from conclusions\.positive/.test(e.message),
    );
  });

  it('reports a not-assessable study with the reason and no positive/negative observation', () => {
    const b = buildResultBundle(notAssessable(positive), maps);
    const dr = one<DiagnosticReport>(b, 'DiagnosticReport');
    assert.equal(dr.conclusion, 'AI screening (not for clinical use): not assessable — no axial CT series of 1–5 mm slices');
    assert.equal(ofType(b, 'Observation').length, 0);
    assert.equal(dr.result, undefined);
    assert.equal(dr.conclusionCode, undefined);
    assert.deepEqual(
      dr.presentedForm?.map((a) => a.contentType),
      ['text/html'],
    );
  });

  it('escapes order text in the HTML summary', () => {
    const ctx = { ...positive, order: { ...positive.order, patient: { ...positive.order.patient, name: { family: '<script>x</script>', given: ['A&B'] } } } };
    const dr = one<DiagnosticReport>(buildResultBundle(ctx, maps), 'DiagnosticReport');
    const page = Buffer.from(dr.presentedForm?.at(-1)?.data ?? '', 'base64').toString('utf8');
    assert.ok(!page.includes('<script>') && page.includes('&#60;script&#62;') && page.includes('A&#38;B'));
  });

  it('names the bad key of an invalid mappings file', () => {
    const doc = structuredClone({ fhir: maps.doc }) as { fhir: Record<string, unknown> };
    doc.fhir.reportCode = { system: 'not a uri', code: '24627-2', display: 'CT Chest' };
    assert.throws(
      () => parseFhirMappings(doc, 'x.yaml'),
      (e: unknown) => e instanceof ResultMappingsError && /fhir\.reportCode\.system/.test(e.message),
    );
  });
});
