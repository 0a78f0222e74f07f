import type { FhirAuthConfig } from '../../config/index.js';
import { loadPrivateKey, SmartBackendAuth } from './smart.js';

/** Supplies the Authorization header for each FHIR request. */
export interface FhirAuth {
  header(): Promise<string | undefined>;
  /** Called after a 401: a cached token is dropped so the next try fetches a fresh one. */
  invalidate(): void;
  /** Whether a 401 may be cured by trying again with a fresh credential. */
  readonly refreshable: boolean;
}

const fixed = (value: string | undefined): FhirAuth => ({ header: async () => value, invalidate() {}, refreshable: false });

export function authFromConfig(auth: FhirAuthConfig, fetchImpl?: typeof fetch): FhirAuth {
  switch (auth.mode) {
    case 'none':
      return fixed(undefined);
    case 'basic':
      return fixed(`Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`);
    case 'bearer':
      return fixed(`Bearer ${auth.token}`);
    case 'smart-backend': {
      const smart = new SmartBackendAuth({
        tokenUrl: auth.tokenUrl,
        clientId: auth.clientId,
        privateKey: loadPrivateKey(auth.privateKeyFile),
        keyId: auth.keyId,
        scope: auth.scope,
        fetch: fetchImpl,
      });
      return { header: async () => `Bearer ${await smart.token()}`, invalidate: () => smart.invalidate(), refreshable: true };
    }
  }
}
