/**
 * @medplum/core reads WebSocket.CLOSING/CLOSED when it loads; Node 20 has a global WebSocket only with
 * --experimental-websocket, which `node --test` runs of this project do not pass. The tests use Medplum's
 * validator and types only, never its subscriptions, so a class with the ready-state constants is enough.
 * Import this before anything that imports @medplum/*. The FHIR peer runs in its own process with the real flag.
 */
if (typeof globalThis.WebSocket === 'undefined') {
  class MissingWebSocket {
    static readonly CONNECTING = 0;
    static readonly OPEN = 1;
    static readonly CLOSING = 2;
    static readonly CLOSED = 3;
    constructor() {
      throw new Error('WebSocket is not available: run node with --experimental-websocket (Node 20)');
    }
  }
  (globalThis as Record<string, unknown>).WebSocket = MissingWebSocket;
}
