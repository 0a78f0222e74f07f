/**
 * Issue 19: DICOM the way hospital PACS store it.
 *
 * - A synthetic CT series compressed by DCMTK / GDCM into every common transfer syntax (JPEG lossless 14 and SV1,
 *   JPEG-LS, JPEG 2000, RLE, deflate, big endian; lossy JPEG baseline/extended, JPEG-LS near-lossless, JPEG 2000)
 *   reads to the same HU volume as the uncompressed series (lossless: bit for bit; lossy: close, with a warning),
 *   and `ctgate analyze` gives the same findings on a lossless copy.
 * - COVID-CT-MD cap002 (JPEG Lossless SV1 as published, StudyInstanceUID a UUID string) is analysed as it is, and
 *   every result carries its StudyInstanceUID byte for byte.
 * - The same series stored in a real Orthanc is retrieved over WADO-RS, transcoded by the PACS or decoded here, to
 *   the volume the local decode gives.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type AnalyzeIo, analyzeCommand, EXIT_UNUSABLE_INPUT, type FindingsJson, loadSeriesFromFiles } from '../../src/cli/analyze.js';
import { isValidDicomUid } from '../../src/dicom/source-uids.js';
import type { DicomWebClient } from '../../src/dicomweb/client.js';
import { retrieveVolume } from '../../src/dicomweb/retrieve.js';
import { writeCtSeries, writeSeriesToDir } from '../../src/synthetic/dicom-writer.js';
import { generateChestCt } from '../../src/synthetic/phantom.js';
import { TestOrthanc } from '../helpers/orthanc.js';
import { unlessPresent } from '../helpers/requires.js';
import { standInModelSet } from '../helpers/stand-in-models.js';

const CAP002 = join('..', 'shared', 'data', 'covid-ct-md', 'cap', 'cap002');
const CAP002_STUDY = '4bae1d63-1eeb-4386-bd1b-68e8ba379989';
const CAP002_SERIES = '7afb0d48-ec01-4941-9a58-66d15cab76fb';

const tool = (name: string) => (spawnSync(name, ['--version']).error ? `${name} not installed (bash .ci/setup.sh installs dcmtk and libgdcm-tools)` : false);
const missingTools = tool('dcmcjpeg') || tool('gdcmconv') || tool('dcmdump');

function capture(): AnalyzeIo & { stderr: () => string } {
  let err = '';
  return { out: () => {}, err: (t) => (err += t), tty: false, stderr: () => err };
}

/** [name, expected transfer syntax, lossy, command building the compressed file from the uncompressed one]. */
const SYNTAXES: [string, string, boolean, (src: string, dst: string) => [string, string[]]][] = [
  ['jpeg-lossless-14', '1.2.840.10008.1.2.4.57', false, (s, d) => ['dcmcjpeg', ['+el', s, d]]],
  ['jpeg-lossless-sv1', '1.2.840.10008.1.2.4.70', false, (s, d) => ['dcmcjpeg', ['+e1', s, d]]],
  ['jpeg-ls', '1.2.840.10008.1.2.4.80', false, (s, d) => ['dcmcjpls', ['+el', s, d]]],
  ['jpeg2000', '1.2.840.10008.1.2.4.90', false, (s, d) => ['gdcmconv', ['--j2k', s, d]]],
  ['rle', '1.2.840.10008.1.2.5', false, (s, d) => ['dcmcrle', [s, d]]],
  ['deflate', '1.2.840.10008.1.2.1.99', false, (s, d) => ['dcmconv', ['+td', s, d]]],
  ['big-endian', '1.2.840.10008.1.2.2', false, (s, d) => ['dcmconv', ['+tb', s, d]]],
  ['jpeg-baseline', '1.2.840.10008.1.2.4.50', true, (s, d) => ['dcmcjpeg', ['+eb', s, d]]],
  ['jpeg-extended', '1.2.840.10008.1.2.4.51', true, (s, d) => ['dcmcjpeg', ['+ee', s, d]]],
  ['jpeg-ls-near', '1.2.840.10008.1.2.4.81', true, (s, d) => ['dcmcjpls', ['+en', s, d]]],
  ['jpeg2000-lossy', '1.2.840.10008.1.2.4.91', true, (s, d) => ['gdcmconv', ['--j2k', '--lossy', '-q', '90', s, d]]],
];

function transferSyntaxOf(file: string): string {
  const out = execFileSync('dcmdump', ['-Un', '+P', '0002,0010', '-q', file], { encoding: 'utf8' });
  return /\[([0-9.]+)\]/.exec(out)?.[1] ?? /=(\S+)/.exec(out)?.[1] ?? out;
}

/** The values of one tag anywhere in a file (sequences included), as dcmdump prints them. */
function tagValues(file: string, tag: string): string[] {
  const out = execFileSync('dcmdump', ['+P', tag, '-q', file], { encoding: 'utf8' });
  return [...out.matchAll(/\[([^\]]*)\]/g)].map((m) => m[1] as string);
}

describe('transfer syntaxes: a synthetic series in every common syntax', { skip: unlessPresent(missingTools) }, () => {
  let root = '';
  let raw = '';
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ctgate-ts-'));
    raw = join(root, 'raw');
    const p = generateChestCt({ seed: 19, kind: 'covid', size: [72, 72, 28], spacing: [2.8, 2.8, 5] });
    await writeSeriesToDir(raw, writeCtSeries(p.volume, { seed: 19, seriesDescription: 'synthetic covid' }));
    const files = (await readdir(raw)).filter((f) => f.endsWith('.dcm'));
    for (const [name, , , make] of SYNTAXES) {
      await mkdir(join(root, name));
      for (const f of files) {
        const [cmd, args] = make(join(raw, f), join(root, name, f));
        execFileSync(cmd, args, { stdio: 'pipe' });
      }
    }
  });
  after(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('reads each to the volume of the uncompressed series (lossless: bit for bit), warning on lossy ones', async () => {
    const ref = await loadSeriesFromFiles([raw]);
    for (const [name, uid, lossy] of SYNTAXES) {
      const dir = join(root, name);
      const first = (await readdir(dir)).sort()[0] as string;
      assert.equal(transferSyntaxOf(join(dir, first)), uid, `${name}: the file is in ${uid}`);
      const got = await loadSeriesFromFiles([dir]);
      assert.deepEqual(got.volume.geometry, ref.volume.geometry, name);
      // DCMTK gives lossy copies new SOP Instance UIDs (they are other images), so positions are compared.
      assert.deepEqual(
        got.slices.map((s) => (lossy ? s.position : s.sopInstanceUid)),
        ref.slices.map((s) => (lossy ? s.position : s.sopInstanceUid)),
        name,
      );
      const warned = got.notes.some((n) => /lossy compressed/.test(n) && n.includes(uid));
      if (!lossy) {
        assert.ok(Buffer.from(got.volume.data.buffer).equals(Buffer.from(ref.volume.data.buffer)), `${name}: HU bit for bit`);
        assert.equal(warned, false, `${name}: no lossy warning`);
      } else {
        let sum = 0;
        for (let i = 0; i < ref.volume.data.length; i++) sum += Math.abs((got.volume.data[i] as number) - (ref.volume.data[i] as number));
        const mean = sum / ref.volume.data.length;
        assert.ok(mean < 40, `${name}: mean |ΔHU| ${mean.toFixed(1)} < 40`);
        assert.ok(warned, `${name}: a lossy warning (${got.notes.join('; ')})`);
      }
    }
  });

  it('analyze gives the same findings on a lossless copy, and warns in findings.json on a lossy one', async () => {
    const models = join(root, 'models');
    await mkdir(models);
    const manifest = join(models, 'manifest.json');
    await writeFile(manifest, JSON.stringify(await standInModelSet(models, { version: 'test', classifierThreshold: 0.2 })));
    const run = async (dir: string) => {
      const out = join(root, `out-${dir}`);
      const io = capture();
      assert.equal(await analyzeCommand([join(root, dir), '--out', out, '--manifest', manifest], io), 0, io.stderr());
      return JSON.parse(await readFile(join(out, 'findings.json'), 'utf8')) as FindingsJson;
    };
    const same = (f: FindingsJson) => ({ ...f, timingsMs: {}, warnings: f.warnings.filter((w) => !/lossy/.test(w)) });
    const ref = await run('raw');
    for (const dir of ['jpeg-lossless-sv1', 'jpeg2000', 'big-endian']) assert.deepEqual(same(await run(dir)), same(ref), dir);
    const lossy = await run('jpeg-extended');
    assert.ok(
      lossy.warnings.some((w) => /1\.2\.840\.10008\.1\.2\.4\.51 \(JPEG Extended \(lossy\)\).*HU values are approximate/.test(w)),
      lossy.warnings.join('\n'),
    );
  });
});

describe('transfer syntaxes: COVID-CT-MD cap002, JPEG Lossless with a UUID StudyInstanceUID', {
  skip: unlessPresent(existsSync(CAP002) ? false : `${CAP002} missing`),
}, () => {
  let root = '';
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ctgate-cap002-'));
  });
  after(async () => {
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('is analysed as published, and every result carries its StudyInstanceUID byte for byte', async () => {
    const out = join(root, 'out');
    const io = capture();
    assert.equal(await analyzeCommand([CAP002, '--out', out], io), 0, io.stderr());
    const f = JSON.parse(await readFile(join(out, 'findings.json'), 'utf8')) as FindingsJson;
    assert.equal(f.series.seriesInstanceUid, CAP002_SERIES);
    assert.equal(f.series.slices, 66);
    assert.ok(
      f.warnings.some((w) => /66 of 66 slice file\(s\) have no SOPInstanceUID/.test(w)),
      f.warnings.join('\n'),
    );
    const dicomFiles = f.results.filter((r) => r.endsWith('.dcm'));
    assert.ok(dicomFiles.includes('report-sr.dcm'));
    for (const file of dicomFiles) {
      const studies = new Set(tagValues(join(out, file), '0020,000d'));
      assert.deepEqual([...studies], [CAP002_STUDY], `${file}: StudyInstanceUID (also in references) exactly the source's`);
      // Its own series is a new, valid 2.25 UID; every other series UID it names is the source's.
      const series = tagValues(join(out, file), '0020,000e');
      const own = series.filter((u) => u !== CAP002_SERIES);
      assert.ok(own.length >= 1 && own.every((u) => u.startsWith('2.25.') && isValidDicomUid(u)), `${file}: own series ${own.join(', ')}`);
      const sops = tagValues(join(out, file), '0008,0018').concat(tagValues(join(out, file), '0008,1155'));
      assert.ok(
        sops.every((u) => isValidDicomUid(u)),
        `${file}: SOP Instance UIDs valid (${sops.filter((u) => !isValidDicomUid(u)).join(', ')})`,
      );
    }
    if (f.results.includes('seg.dcm'))
      assert.deepEqual(tagValues(join(out, 'seg.dcm'), '0020,000e').includes(CAP002_SERIES), true, 'SEG references the source series');
    const oru = await readFile(join(out, 'oru.hl7'), 'utf8');
    assert.ok(oru.includes(CAP002_STUDY), 'ORU carries the StudyInstanceUID');
    assert.ok(!oru.includes('4163143861688379989'), 'ORU has no digits-only copy');
    const bundle = await readFile(join(out, 'bundle.json'), 'utf8');
    assert.ok(bundle.includes(`urn:oid:${CAP002_STUDY}`), 'ImagingStudy identifier is the StudyInstanceUID');
    assert.ok(!bundle.includes('4163143861688379989'));
  });

  it('refuses, exit 2, a series whose StudyInstanceUID cannot be written (65 characters)', async () => {
    const dir = join(root, 'long-uid');
    await cp(CAP002, dir, { recursive: true });
    const long = `1.2.${'3'.repeat(61)}`;
    const files = (await readdir(dir)).map((f) => join(dir, f));
    execFileSync('dcmodify', ['-nb', '-m', `(0020,000d)=${long}`, ...files], { stdio: 'pipe' });
    const io = capture();
    assert.equal(await analyzeCommand([dir, '--out', join(root, 'x')], io), EXIT_UNUSABLE_INPUT);
    assert.match(io.stderr(), /StudyInstanceUID .* is 65 characters long; a DICOM UID holds at most 64/);
  });
});

describe('transfer syntaxes: cap002 through a real Orthanc', { skip: unlessPresent(existsSync(CAP002) ? false : `${CAP002} missing`) }, () => {
  const pacs = new TestOrthanc({ user: 'ctgate', password: 'pacs-secret' });
  let root = '';
  let client: DicomWebClient;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'ctgate-cap002-pacs-'));
    await pacs.start();
    client = pacs.client({ retries: 1 });
  });
  after(async () => {
    await pacs.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('retrieves it over WADO-RS, transcoded by the PACS or decoded here, to the local decode', async () => {
    // Orthanc refuses instances without a SOPInstanceUID (cap002 has none): give each one, pixel data untouched.
    const dir = join(root, 'cap002');
    await cp(CAP002, dir, { recursive: true });
    const names = (await readdir(dir)).sort();
    names.forEach((n, i) => {
      execFileSync('dcmodify', ['-nb', '-i', `(0008,0018)=2.25.1919${i + 1}`, join(dir, n)], { stdio: 'pipe' });
    });
    assert.equal(transferSyntaxOf(join(dir, names[0] as string)), '1.2.840.10008.1.2.4.70', 'still JPEG Lossless SV1');
    const local = await loadSeriesFromFiles([dir]);
    await client.store(await Promise.all(names.map((n) => readFile(join(dir, n)))));

    for (const frameSyntax of ['explicit-le', 'as-stored'] as const) {
      const c = pacs.client({ retries: 1, frameSyntax });
      const r = await retrieveVolume(c, CAP002_STUDY, CAP002_SERIES, { concurrency: 2 });
      if (frameSyntax === 'as-stored') assert.deepEqual(r.decodedSyntaxes, ['1.2.840.10008.1.2.4.70'], 'decoded here');
      assert.deepEqual(r.volume.geometry, local.volume.geometry, frameSyntax);
      assert.deepEqual(
        r.slices.map((s) => s.sopInstanceUid),
        local.slices.map((s) => s.sopInstanceUid),
      );
      assert.ok(Buffer.from(r.volume.data.buffer).equals(Buffer.from(local.volume.data.buffer)), `${frameSyntax}: HU bit for bit`);
    }
  });
});
