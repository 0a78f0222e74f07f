export { freePort, LocalOrthanc as TestOrthanc } from '../../src/cli/local-peers/orthanc.js';
