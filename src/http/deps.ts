/** What the HTTP side is built from (createApp in app.ts); each router takes the part it uses (RouterDeps). */
import type { Redis } from 'ioredis';
import type { Config } from '../config/index.js';
import type { DicomWebClient } from '../dicomweb/client.js';
import type { JobStateStore } from '../jobs/job-state.js';
import type { ScreeningQueue } from '../jobs/queue.js';
import type { Logger } from '../observability/log.js';
import type { Intake } from '../orders/intake.js';
import type { OrderStore } from '../orders/store.js';
import type { AuthOptions } from './auth.js';

export interface HttpDeps {
  config: Config;
  /** Job checkpoints (stage, outputs, analysis with the lesion mask) written by the workers. */
  states: JobStateStore;
  /** The PACS (DICOMweb); absent when CTGATE_PACS_URL is not set. */
  pacs?: DicomWebClient;
  apiToken: string;
  /** Who may call: built by createApp from apiToken and config.oidc unless given (tests). */
  auth?: AuthOptions;
  redis: Redis;
  queue: ScreeningQueue;
  store: OrderStore;
  intake: Intake;
  log: Logger;
  reloadMappings: () => void;
}

/** What every router needs to check its callers (authOf). Each router takes this and only the rest it uses. */
export type RouterDeps<K extends keyof HttpDeps = never> = Pick<HttpDeps, 'auth' | 'apiToken' | 'log' | K>;
