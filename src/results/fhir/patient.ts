import type { BundleEntry, Identifier, Patient } from 'fhir/r4.js';
import { type BuildInput, FhirMappingError, templateVars } from './input.js';
import { SYSTEM, V2_IDENTIFIER_TYPES } from './terminology.js';

/**
 * The patient, matched by identifier: conditional create (If-None-Exist) on the medical record number and its
 * assigning authority. When the chart already has the patient, the server links to that record and leaves its
 * demographics alone (the EMR owns them); only an unknown patient is created from the order's PID.
 */
export function patientEntry({ ctx, maps, refs }: BuildInput): BundleEntry<Patient> {
  const { order } = ctx;
  const vars = templateVars(order);
  const identifiers: Identifier[] = order.patient.identifiers
    .filter((id) => id.value.trim() !== '')
    .map((id) => {
      const authority = id.authority || order.sender.facility;
      const typeCode = id.type.trim().toUpperCase();
      const display = V2_IDENTIFIER_TYPES[typeCode];
      return {
        ...(display ? { type: { coding: [{ system: SYSTEM.v2IdentifierType, code: typeCode, display }] } } : id.type ? { type: { text: id.type } } : {}),
        system: maps.patientSystem(authority, vars),
        value: id.value.trim(),
        assigner: { display: authority },
      };
    });
  const match = identifiers.find((i) => i.type?.coding?.[0]?.code === 'MR') ?? identifiers[0];
  if (!match?.system || !match.value) throw new FhirMappingError('the order has no patient identifier to match the chart on');

  const { name, birthDate, sex } = order.patient;
  const given = name.given.filter((g) => g.trim() !== '');
  const patient: Patient = {
    resourceType: 'Patient',
    identifier: identifiers,
    ...(name.family || given.length
      ? { name: [{ use: 'official', ...(name.family ? { family: name.family } : {}), ...(given.length ? { given } : {}) }] }
      : {}),
    ...(sex ? { gender: sex } : {}),
    ...(birthDate ? { birthDate } : {}),
  };
  return {
    fullUrl: refs.patient,
    resource: patient,
    request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${encodeURIComponent(`${match.system}|${match.value}`)}` },
  };
}
