/**
 * docker/: there is no Docker daemon where these tests run, so the compose file and the Dockerfiles are checked
 * as documents: services, profiles, healthchecks, Redis durability, the GPU reservation, no secret written inline,
 * every CTGATE_* key a real one, and every COPY source let through by the image's .dockerignore.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { configKeys } from '../../src/config/index.js';

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  profiles?: string[];
  environment?: Record<string, string>;
  env_file?: { path: string; required: boolean }[];
  healthcheck?: { test: string[] };
  volumes?: string[];
  deploy?: { resources?: { reservations?: { devices?: { driver: string; count: number; capabilities: string[] }[] } } };
  depends_on?: Record<string, { condition: string }>;
}

const text = readFileSync('docker/compose.yaml', 'utf8');
const doc = parse(text, { merge: true }) as { services: Record<string, Service>; volumes: Record<string, unknown> };
const services = doc.services;
const SECRET = /PASSWORD|TOKEN|SECRET|PRIVATE_KEY/;

describe('docker/compose.yaml', () => {
  it('has the whole stack, with the GPU worker only under the gpu profile', () => {
    assert.deepEqual(Object.keys(services).sort(), ['gateway', 'gpu-worker', 'orthanc', 'redis', 'worker']);
    for (const name of ['redis', 'orthanc', 'gateway', 'worker']) assert.equal(services[name]?.profiles, undefined, name);
    assert.deepEqual(services['gpu-worker']?.profiles, ['gpu']);
    assert.ok('redis-data' in doc.volumes && 'orthanc-data' in doc.volumes);
  });

  it('runs Redis with the AOF fsynced on every write and noeviction', () => {
    const cmd = (services.redis?.command ?? []).join(' ');
    assert.match(cmd, /--appendonly yes/);
    assert.match(cmd, /--appendfsync always/);
    assert.match(cmd, /--maxmemory-policy noeviction/);
  });

  it('runs Orthanc with the plugins image and the mounted config enabling DICOMweb behind a login', () => {
    const o = services.orthanc as Service;
    assert.match(o.image ?? '', /^jodogne\/orthanc-plugins:\d/);
    assert.ok(o.volumes?.includes('./orthanc/orthanc.json:/etc/orthanc/orthanc.json:ro'));
    const cfg = JSON.parse(readFileSync('docker/orthanc/orthanc.json', 'utf8'));
    assert.equal(cfg.DicomWeb.Enable, true);
    assert.equal(cfg.DicomWeb.Root, '/dicom-web/');
    assert.equal(cfg.AuthenticationEnabled, true);
    for (const pw of Object.values(cfg.RegisteredUsers)) assert.match(String(pw), /^\$\{[A-Z_]+\}$/, 'passwords come from the environment');
    assert.equal(services.gateway?.environment?.CTGATE_PACS_URL, 'http://orthanc:8042/dicom-web');
  });

  it('runs the gateway, the CPU worker and the GPU worker with their commands and images', () => {
    assert.deepEqual(services.gateway?.command, ['serve']);
    assert.equal(services.gateway?.build?.dockerfile, 'docker/Dockerfile');
    assert.deepEqual(services.worker?.command, ['worker']);
    assert.equal(services.worker?.image, services.gateway?.image, 'one CPU image for both');
    const gpu = services['gpu-worker'] as Service;
    assert.deepEqual(gpu.command, ['worker', '--gpu']);
    assert.equal(gpu.build?.dockerfile, 'docker/Dockerfile.cuda');
    const dev = gpu.deploy?.resources?.reservations?.devices?.[0];
    assert.equal(dev?.driver, 'nvidia');
    assert.deepEqual(dev?.capabilities, ['gpu']);
    for (const name of ['gateway', 'worker', 'gpu-worker']) {
      assert.equal(services[name]?.depends_on?.redis?.condition, 'service_healthy', name);
      assert.equal(services[name]?.environment?.CTGATE_REDIS_URL, 'redis://redis:6379', name);
    }
  });

  it('gives every service a healthcheck: /ready for the gateway, the readiness probe for workers', () => {
    for (const [name, s] of Object.entries(services)) assert.ok(s.healthcheck?.test?.length, `${name} has a healthcheck`);
    assert.match(services.gateway?.healthcheck?.test.join(' ') ?? '', /\/ready/);
    for (const name of ['worker', 'gpu-worker']) {
      const t = services[name]?.healthcheck?.test.join(' ') ?? '';
      assert.match(t, /src\/observability\/probe\.ts/, name);
      const probe = t.match(/(src\/observability\/probe\.ts)/)?.[1] as string;
      assert.ok(existsSync(probe));
    }
    assert.match(readFileSync('docker/Dockerfile', 'utf8'), /HEALTHCHECK[\s\S]*\/health/);
  });

  it('writes no secret inline: secrets are compose variables or come from the optional env_file', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const [k, v] of Object.entries(s.environment ?? {})) {
        if (SECRET.test(k)) assert.match(String(v), /^\$\{[A-Z_]+(:\?[^}]*)?\}$/, `${name}.${k} must be a variable`);
      }
      for (const f of s.env_file ?? []) {
        assert.equal(f.required, false, `${name}: the env_file is optional`);
        assert.ok(existsSync(`docker/${f.path}.example`), `docker/${f.path}.example documents it`);
      }
    }
    assert.doesNotMatch(text, /Bearer [A-Za-z0-9]{8,}|password:\s*["']?[A-Za-z0-9]{6,}/i);
    // The examples hold no values for secrets, and the real files are ignored by git.
    for (const f of ['docker/.env.example', 'docker/ctgate.env.example']) {
      for (const line of readFileSync(f, 'utf8').split('\n')) {
        const m = /^([A-Z_]+)=(.*)$/.exec(line);
        if (m && SECRET.test(m[1] as string)) assert.equal(m[2], '', `${f}: ${m[1]} is left empty`);
      }
    }
    assert.match(readFileSync('docker/.gitignore', 'utf8'), /^\.env$/m);
  });

  it('uses only configuration keys ctgate knows', () => {
    const known = new Set(configKeys);
    const used = new Set<string>();
    for (const s of Object.values(services)) for (const k of Object.keys(s.environment ?? {})) if (k.startsWith('CTGATE_')) used.add(k);
    for (const f of ['docker/.env.example', 'docker/ctgate.env.example']) {
      for (const m of readFileSync(f, 'utf8').matchAll(/^#?\s*(CTGATE_[A-Z0-9_]+)=/gm)) used.add(m[1] as string);
    }
    assert.ok(used.size > 5);
    for (const k of used) assert.ok(known.has(k), `${k} is a configuration key`);
    assert.ok(known.has('CTGATE_METRICS_OPEN'));
  });
});

describe('docker/Dockerfile and docker/Dockerfile.cuda', () => {
  const allowed = (ignore: string, src: string) => {
    const allow = readFileSync(ignore, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('!'))
      .map((l) => l.slice(1));
    return allow.some((a) => a === src || a.startsWith(`${src}/`) || src.startsWith(`${a}/`));
  };

  it('CPU image: node:20-bookworm-slim, npm ci with ONNXRUNTIME_NODE_INSTALL=skip, `ctgate serve` by default', () => {
    const f = readFileSync('docker/Dockerfile', 'utf8');
    assert.match(f, /^FROM node:20-bookworm-slim AS deps$/m);
    assert.match(f, /ONNXRUNTIME_NODE_INSTALL=skip npm ci/);
    assert.match(f, /^ENTRYPOINT \["node", "bin\/ctgate\.mjs"\]$/m);
    assert.match(f, /^CMD \["serve"\]$/m);
    assert.match(f, /^USER node$/m);
  });

  it('CUDA image: nvidia/cuda runtime base with Node 20, ONNXRUNTIME_NODE_INSTALL=cuda12, `ctgate worker --gpu`', () => {
    const f = readFileSync('docker/Dockerfile.cuda', 'utf8');
    assert.match(f, /^ARG CUDA_IMAGE=nvidia\/cuda:12\.[\d.]+-cudnn-runtime-ubuntu[\d.]+$/m);
    assert.match(f, /^FROM node:20-bookworm-slim AS node$/m);
    assert.match(f, /ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci/);
    assert.match(f, /^CMD \["worker", "--gpu"\]$/m);
    assert.match(f, /^USER 1000$/m);
  });

  it('copies only what its .dockerignore lets into the build context, and those files exist', () => {
    for (const file of ['docker/Dockerfile', 'docker/Dockerfile.cuda']) {
      const f = readFileSync(file, 'utf8');
      for (const m of f.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
        for (const src of (m[1] as string).split(/\s+/)) {
          assert.ok(allowed(`${file}.dockerignore`, src), `${file}: ${src} is allowed by ${file}.dockerignore`);
          assert.ok(existsSync(src), `${src} exists`);
        }
      }
    }
    assert.ok(allowed('docker/Dockerfile.dockerignore', 'models/manifest.json'));
    assert.ok(!allowed('docker/Dockerfile.dockerignore', 'models/training'));
  });
});
