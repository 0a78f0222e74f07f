/** What the HTTP side is built from (createApp in app.ts); each router takes it. */
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
