/** ctgate's version, as results name the software that made them (SEG/SR SoftwareVersions, FHIR Device, ORU). */
export const CTGATE_VERSION = '0.1.0';
