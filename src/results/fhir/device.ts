import type { BundleEntry, Device } from 'fhir/r4.js';
import { stableId } from './ids.js';
import { type BuildInput, modelsKey } from './input.js';

export const deviceId = (models: string): string => stableId('Device', models);

/** The algorithm that made the result: one Device per set of model versions, named by every Observation. */
export function deviceEntry({ ctx, maps, refs }: BuildInput): BundleEntry<Device> {
  const id = deviceId(modelsKey(ctx));
  const d = maps.doc.device;
  return {
    fullUrl: refs.device,
    resource: {
      resourceType: 'Device',
      id,
      status: 'active',
      manufacturer: d.manufacturer,
      deviceName: [{ name: d.name, type: 'model-name' }],
      type: { coding: [maps.deviceType], text: maps.deviceType.display },
      version: ctx.analysis.models.map((m) => ({ type: { text: m.name }, value: m.version })),
    },
    request: { method: 'PUT', url: `Device/${id}` },
  };
}
