import Router from '@koa/router';
import type { HttpDeps } from './app.js';

/** /dicom-web: the DICOMweb proxy (being written). */
export function dicomWebProxy(_deps: HttpDeps): Router {
  return new Router();
}
