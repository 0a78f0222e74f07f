import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject, verify } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Bundle, DiagnosticReport, Observation, Patient } from 'fhir/r4.js';
import { buildResultBundle } from '../../src/results/fhir/bundle.js';
import { FhirSendError, FhirSender } from '../../src/results/fhir/client.js';
import { loadFhirMappings } from '../../src/results/fhir/mappings.js';
import { SmartBackendAuth } from '../../src/results/fhir/smart.js';
import { TestFhirServer } from '../helpers/fhir.js';
import { syntheticResult } from '../helpers/result-context.js';

const TOKEN = 'test-token-0123456789abcdef';
const MRN_SYSTEM = 'urn:ctgate:id:GENHOSP';
const maps = loadFhirMappings('mappings/results.yaml');
const { context } = syntheticResult({ seed: 7, kind: 'covid' });
const SEG = { seriesInstanceUid: '2.25.99887766', sopInstanceUid: '2.25.99887767', seriesNumber: 900 };

const sender = (baseUrl: string, token = TOKEN) =>
  new FhirSender({
    baseUrl,
    auth: { header: async () => `Bearer ${token}`, invalidate() {}, refreshable: false },
    timeoutMs: 10_000,
    retries: 1,
    retryBaseMs: 10,
  });

/** A SMART token endpoint: checks the client_assertion's RS384/ES384 signature and claims, then issues TOKEN. */
async function tokenEndpoint(clientId: string, publicKey: KeyObject): Promise<{ url: string; server: Server; assertions: string[] }> {
  const assertions: string[] = [];
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const c of req) body += c;
    const form = new URLSearchParams(body);
    const refuse = (why: string) => {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'invalid_client', error_description: why }));
    };
    const jwt = form.get('client_assertion') ?? '';
    const [h, p, s] = jwt.split('.');
    if (
      form.get('grant_type') !== 'client_credentials' ||
      form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' ||
      !h ||
      !p ||
      !s
    )
      return refuse('bad request');
    const header = JSON.parse(Buffer.from(h, 'base64url').toString());
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    const ok = verify('sha384', Buffer.from(`${h}.${p}`), { key: publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'));
    if (!ok) return refuse('signature does not verify');
    if (!['RS384', 'ES384'].includes(header.alg)) return refuse(`alg ${header.alg}`);
    const now = Date.now() / 1000;
    if (claims.iss !== clientId || claims.sub !== clientId || claims.aud !== url || !(claims.exp > now && claims.exp <= now + 300) || !claims.jti)
      return refuse('claims');
    assertions.push(jwt);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ access_token: TOKEN, token_type: 'bearer', expires_in: 300, scope: form.get('scope') }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
  return { url, server, assertions };
}

describe('FHIR results in a real FHIR server (Medplum engine)', () => {
  const fhir = new TestFhirServer({ token: TOKEN });
  let patientId = '';
  const get = async <T>(path: string, token = TOKEN): Promise<T> => {
    const res = await fetch(`${fhir.url}/${path}`, { headers: { authorization: `Bearer ${token}`, accept: 'application/fhir+json' } });
    assert.equal(res.status, 200, `${path}: ${res.status}`);
    return (await res.json()) as T;
  };
  const post = async <T>(type: string, body: unknown): Promise<T> => {
    const res = await fetch(`${fhir.url}/${type}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/fhir+json' },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 201);
    return (await res.json()) as T;
  };
  const count = async (query: string) => ((await get<Bundle>(query)).entry ?? []).filter((e) => e.search?.mode !== 'include').length;

  before(async () => {
    await fhir.start();
    // The chart before ctgate: the patient (registered by the EMR, other demographics) and the lab's NAT result.
    const patient = await post<Patient>('Patient', {
      resourceType: 'Patient',
      identifier: [{ system: MRN_SYSTEM, value: 'MRN000123' }],
      name: [{ family: 'Chart', given: ['Registered'] }],
      birthDate: '1970-01-01',
    });
    patientId = patient.id as string;
    // LOINC 94500-6 "SARS-CoV-2 (COVID-19) RNA [Presence] in Respiratory system specimen by NAA with probe
    // detection" (loinc.org, panel 94531-1); SNOMED 260373001 |Detected|.
    const nat = await post<Observation>('Observation', {
      resourceType: 'Observation',
      status: 'final',
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }],
      code: {
        coding: [
          {
            system: 'http://loinc.org',
            code: '94500-6',
            display: 'SARS-CoV-2 (COVID-19) RNA [Presence] in Respiratory system specimen by NAA with probe detection',
          },
        ],
      },
      subject: { reference: `Patient/${patientId}` },
      effectiveDateTime: '2020-03-14',
      valueCodeableConcept: { coding: [{ system: 'http://snomed.info/sct', code: '260373001', display: 'Detected' }] },
    });
    await post<DiagnosticReport>('DiagnosticReport', {
      resourceType: 'DiagnosticReport',
      status: 'final',
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0074', code: 'LAB' }] }],
      code: nat.code,
      subject: { reference: `Patient/${patientId}` },
      effectiveDateTime: '2020-03-14',
      result: [{ reference: `Observation/${nat.id}` }],
    });
  });
  after(() => fhir.stop());

  it('posting the bundle twice leaves exactly one of each resource, linked to the chart patient', async () => {
    const bundle = buildResultBundle(context, maps, { seg: SEG });
    const first = await sender(fhir.url).send(bundle, context.jobId);
    const second = await sender(fhir.url).send(bundle, context.jobId);
    assert.equal(first.resources.length, bundle.entry?.length);
    assert.deepEqual(
      second.resources.map((r) => `${r.resourceType}/${r.id}`),
      first.resources.map((r) => `${r.resourceType}/${r.id}`),
    );
    assert.equal(first.resources.find((r) => r.resourceType === 'Patient')?.id, patientId);

    assert.equal(await count(`Patient?identifier=${encodeURIComponent(`${MRN_SYSTEM}|MRN000123`)}`), 1);
    const chart = await get<Patient>(`Patient/${patientId}`);
    assert.equal(chart.name?.[0]?.family, 'Chart', 'existing demographics are not overwritten');
    assert.equal(await count('ServiceRequest?identifier=PLC1001'), 1);
    assert.equal(await count(`ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${context.study.studyInstanceUid}`)}`), 1);
    assert.equal(await count('Device'), 1);
    assert.equal(await count('Endpoint'), 1);
    assert.equal(await count(`Observation?subject=Patient/${patientId}`), 5, 'four AI observations and the lab NAT');
    assert.equal(await count(`DiagnosticReport?subject=Patient/${patientId}`), 2);
  });

  it('the chart view finds the AI report beside the lab NAT report, with their results', async () => {
    const b = await get<Bundle>(`DiagnosticReport?subject=Patient/${patientId}&_include=DiagnosticReport:result`);
    const reports = (b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource as DiagnosticReport);
    assert.deepEqual(reports.map((r) => r.code.coding?.[0]?.code).sort(), ['24627-2', '94500-6']);
    const ai = reports.find((r) => r.code.coding?.[0]?.code === '24627-2');
    assert.equal(ai?.status, 'preliminary');
    assert.match(ai?.conclusion ?? '', /^AI screening \(not for clinical use\): COVID-19 pneumonia pattern likely/);
    assert.equal(ai?.imagingStudy?.[0]?.reference?.startsWith('ImagingStudy/'), true, 'urn:uuid references were resolved');
    const included = (b.entry ?? []).filter((e) => e.search?.mode === 'include').map((e) => (e.resource as Observation).code.coding?.[0]?.code);
    assert.ok(included.includes('94500-6') && included.includes('covid19-pneumonia-pattern'), included.join());
    const observation = (b.entry ?? []).find((e) => (e.resource as Observation).code?.coding?.[0]?.code === 'lung-lesion-volume')?.resource as Observation;
    assert.match(observation.device?.reference ?? '', /^Device\//);
    assert.match(observation.derivedFrom?.[0]?.reference ?? '', /^ImagingStudy\//);

    // The same view by the patient's identifier (chained search), as an EMR that knows only the MRN asks.
    const chained = await get<Bundle>(`DiagnosticReport?subject:Patient.identifier=${encodeURIComponent(`${MRN_SYSTEM}|MRN000123`)}`);
    assert.equal(chained.entry?.length, 2);
  });

  it('refuses a wrong bearer token with a clear error and does not retry it', async () => {
    const err = await sender(fhir.url, 'wrong-token-0123456789')
      .send(buildResultBundle(context, maps), context.jobId)
      .catch((e: unknown) => e);
    assert.ok(err instanceof FhirSendError);
    assert.equal(err.status, 401);
    assert.equal(err.retryable, false);
    assert.match(err.message, /answered 401: error login missing or invalid bearer token after 1 attempt$/);
  });

  it('reports a 4xx with the OperationOutcome text', async () => {
    const bundle = buildResultBundle(context, maps);
    const bad = structuredClone(bundle);
    const dr = bad.entry?.find((e) => e.resource?.resourceType === 'DiagnosticReport');
    if (dr?.request) dr.request.url = 'DiagnosticReport/another-id';
    const err = await sender(fhir.url)
      .send(bad)
      .catch((e: unknown) => e);
    assert.ok(err instanceof FhirSendError);
    assert.equal(err.status, 400);
    assert.match(err.message, /answered 400: error .*Incorrect resource ID/);
  });

  for (const kind of ['rsa', 'ec'] as const) {
    it(`authenticates with SMART Backend Services (${kind === 'rsa' ? 'RS384' : 'ES384'} client assertion)`, async () => {
      const keys = kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-384' });
      const endpoint = await tokenEndpoint('ctgate-test', keys.publicKey);
      try {
        const auth = new SmartBackendAuth({
          tokenUrl: endpoint.url,
          clientId: 'ctgate-test',
          privateKey: keys.privateKey,
          keyId: 'k1',
          scope: 'system/*.write',
        });
        const smartSender = new FhirSender({
          baseUrl: fhir.url,
          auth: { header: async () => `Bearer ${await auth.token()}`, invalidate: () => auth.invalidate(), refreshable: true },
          timeoutMs: 10_000,
          retries: 0,
          retryBaseMs: 10,
        });
        const sent = await smartSender.send(buildResultBundle(context, maps, { seg: SEG }));
        await smartSender.send(buildResultBundle(context, maps, { seg: SEG }));
        assert.ok(sent.resources.some((r) => r.resourceType === 'DiagnosticReport'));
        assert.equal(endpoint.assertions.length, 1, 'the access token is cached between sends');
        const header = JSON.parse(Buffer.from(endpoint.assertions[0]?.split('.')[0] ?? '', 'base64url').toString());
        assert.deepEqual(header, { alg: kind === 'rsa' ? 'RS384' : 'ES384', typ: 'JWT', kid: 'k1' });

        // A key the endpoint does not know is refused there, before anything reaches the FHIR server.
        const other = kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-384' });
        const wrong = new SmartBackendAuth({ tokenUrl: endpoint.url, clientId: 'ctgate-test', privateKey: other.privateKey, scope: 'system/*.write' });
        await assert.rejects(wrong.token(), /token endpoint refused client ctgate-test: invalid_client: signature does not verify/);
      } finally {
        endpoint.server.close();
      }
    });
  }
});
