/** Moved to src/domain/patient-identity.ts; this path stays until jobs/screening-deps.ts and jobs/stages/patient-check.ts import the new one. */
export * from '../domain/patient-identity.js';
