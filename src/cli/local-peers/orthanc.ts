import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DicomWebClient, type PacsOptions } from '../../dicomweb/client.js';

const ORTHANC = '/usr/sbin/Orthanc';
const PLUGINS = '/usr/share/orthanc/plugins';

export async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  s.close();
  return port;
}

/**
 * Orthanc's DICOM (DIMSE) server, on a free port (Orthanc 1.10 binds all interfaces; tests talk to it over loopback).
 * Its defaults here: the called AE title is checked, echo and store are allowed from any AE (find only with alwaysAllowFind).
 */
/** Orthanc's object form of a DicomModalities entry: the peer, and which DIMSE requests it may make (default all). */
export interface OrthancModality {
  AET: string;
  Host: string;
  Port: number;
  AllowEcho?: boolean;
  AllowFind?: boolean;
  AllowGet?: boolean;
  AllowMove?: boolean;
  AllowStore?: boolean;
}

export interface OrthancDicomOptions {
  aet?: string;
  /**
   * Orthanc's own DICOM server (SCP) on a free port (default true). false keeps it off (Orthanc 1.10 would bind every
   * interface) while Orthanc still calls out as `aet` to the `modalities` (REST /modalities/<name>/echo, /store).
   */
  listen?: boolean;
  checkCalledAet?: boolean;
  alwaysAllowEcho?: boolean;
  alwaysAllowStore?: boolean;
  /**
   * Answer C-FIND from any AE (Orthanc's DicomAlwaysAllowFind; default off, as Orthanc's: with it on, Orthanc accepts
   * an association from any calling AE, so a peer that should reject unknown AEs must leave it off).
   */
  alwaysAllowFind?: boolean;
  /**
   * DicomModalities: name → [AE title, host, port] of the peers Orthanc knows, or Orthanc's object form with what each
   * may do (e.g. `{ AET, Host, Port, AllowGet: false }`: a peer that may C-FIND but not C-GET).
   */
  modalities?: Record<string, [string, string, number] | OrthancModality>;
  /** Orthanc refuses a new patient's instances (C-STORE 0xa700, storage full) once this many patients are stored and protected. */
  maximumPatientCount?: number;
}

/**
 * A real Orthanc PACS with the DICOMweb plugin, on a free port and a temporary storage folder: the PACS of the
 * tests and of `ctgate demo` (a hospital points ctgate at its own PACS instead). Everything it writes (the
 * studies, its index, its temporary files) stays in that folder, which stop() removes.
 */
export class LocalOrthanc {
  private proc?: ChildProcess;
  private dir = '';
  port = 0;
  /** Its DICOM (DIMSE) port when opts.dicom asks for the DICOM server; 0 otherwise. */
  dicomPort = 0;
  log = '';

  /**
   * `dicomweb: false` starts it with the DICOMweb plugin disabled (`"DicomWeb": {"Enable": false}`): a PACS that
   * answers DIMSE (C-ECHO, C-FIND, C-GET, C-MOVE, C-STORE) and its own REST API only, as many do.
   */
  constructor(private readonly opts: { user?: string; password?: string; stableAgeSeconds?: number; dicom?: OrthancDicomOptions; dicomweb?: boolean } = {}) {}

  /** Its AE title when the DICOM server is on. */
  get dicomAet(): string {
    return this.opts.dicom?.aet ?? 'ORTHANC';
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The folder that holds its storage, index, temporary files and configuration ('' before start()). */
  get storageDir(): string {
    return this.dir;
  }

  get dicomweb(): string {
    return `${this.url}/dicom-web`;
  }

  /** A DICOMweb client for this PACS with its credentials. */
  client(opts: Partial<PacsOptions> = {}): DicomWebClient {
    const auth: PacsOptions['auth'] = this.opts.user ? { kind: 'basic', user: this.opts.user, password: this.opts.password ?? '' } : { kind: 'none' };
    return new DicomWebClient({ url: this.dicomweb, auth, timeoutMs: 10_000, retries: 1, retryBaseMs: 50, ...opts });
  }

  async start(): Promise<void> {
    if (!existsSync(ORTHANC) || !existsSync(join(PLUGINS, 'libOrthancDicomWeb.so'))) {
      throw new Error('Orthanc with the DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb); run: bash .ci/setup.sh');
    }
    this.dir = mkdtempSync(join(tmpdir(), 'ctgate-orthanc-'));
    this.port = await freePort();
    const d = this.opts.dicom;
    if (d && d.listen !== false) this.dicomPort = await freePort();
    const auth = Boolean(this.opts.user);
    const config = {
      Name: 'ctgate-test-pacs',
      StorageDirectory: join(this.dir, 'db'),
      IndexDirectory: join(this.dir, 'db'),
      TemporaryDirectory: join(this.dir, 'tmp'),
      Plugins: [join(PLUGINS, 'libOrthancDicomWeb.so')],
      HttpPort: this.port,
      RemoteAccessAllowed: false,
      AuthenticationEnabled: auth,
      RegisteredUsers: auth ? { [this.opts.user as string]: this.opts.password ?? '' } : {},
      DicomServerEnabled: d !== undefined && d.listen !== false,
      ...(d
        ? {
            DicomAet: this.dicomAet,
            ...(this.dicomPort ? { DicomPort: this.dicomPort } : {}),
            DicomCheckCalledAet: d.checkCalledAet ?? true,
            DicomAlwaysAllowEcho: d.alwaysAllowEcho ?? true,
            DicomAlwaysAllowStore: d.alwaysAllowStore ?? true,
            DicomAlwaysAllowFind: d.alwaysAllowFind ?? false,
            DicomModalities: d.modalities ?? {},
            ...(d.maximumPatientCount !== undefined ? { MaximumPatientCount: d.maximumPatientCount } : {}),
          }
        : {}),
      UnknownSopClassAccepted: true,
      StableAge: this.opts.stableAgeSeconds ?? 2,
      StorageCompression: false,
      DicomWeb: { Enable: this.opts.dicomweb !== false, Root: '/dicom-web/', StudiesMetadata: 'Full', SeriesMetadata: 'Full' },
    };
    mkdirSync(join(this.dir, 'tmp'));
    writeFileSync(join(this.dir, 'orthanc.json'), JSON.stringify(config));
    this.proc = spawn(ORTHANC, [join(this.dir, 'orthanc.json')], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr?.on('data', (d) => {
      this.log = (this.log + d).slice(-4000);
    });
    const headers: Record<string, string> = auth ? { Authorization: `Basic ${Buffer.from(`${this.opts.user}:${this.opts.password}`).toString('base64')}` } : {};
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`Orthanc exited: ${this.log}`);
      try {
        if ((await fetch(`${this.url}/system`, { headers })).ok) return;
      } catch {}
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`Orthanc did not answer on ${this.url}: ${this.log}`);
  }

  /** Sends the server process a signal: SIGSTOP/SIGCONT make an outage in which it accepts connections and never answers. */
  signal(sig: NodeJS.Signals): void {
    this.proc?.kill(sig);
  }

  async stop(): Promise<void> {
    const p = this.proc;
    // signalCode: a Ctrl-C reaches Orthanc too (same process group) and it may already be gone.
    if (p && p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 8000);
      await once(p, 'exit');
      clearTimeout(t);
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
