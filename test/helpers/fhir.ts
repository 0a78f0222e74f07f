export { LocalFhirServer as TestFhirServer } from '../../src/cli/local-peers/fhir.js';
