import Router from '@koa/router';
import type { HttpDeps } from './app.js';

/** /ready, /metrics and the admin job API (being written). */
export function opsRoutes(_deps: HttpDeps): Router {
  return new Router();
}
