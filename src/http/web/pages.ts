import Router from '@koa/router';
import type { HttpDeps } from '../app.js';

/** the web pages (being written). */
export function webPages(_deps: HttpDeps): Router {
  return new Router();
}
