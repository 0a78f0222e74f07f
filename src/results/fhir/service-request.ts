import type { BundleEntry, CodeableConcept, Coding, Identifier, ServiceRequest } from 'fhir/r4.js';
import type { Order } from '../../domain/order.js';
import { type BuildInput, FhirMappingError, templateVars } from './input.js';
import type { FhirMappings } from './mappings.js';
import { IDENTIFIER_TYPE } from './terminology.js';

const PRIORITIES = new Set(['routine', 'urgent', 'asap', 'stat']);

/** The ordered procedure as a CodeableConcept: codings for the systems the mappings know, the sender's text. */
export function procedureConcept(order: Order, maps: FhirMappings): CodeableConcept {
  const codings: Coding[] = [];
  for (const p of [order.procedure, order.procedure.alternate]) {
    const system = p ? maps.codeSystemUri(p.system) : undefined;
    if (p?.code && system) codings.push({ system, code: p.code, ...(p.text ? { display: p.text } : {}) });
  }
  const text = order.procedure.text || order.procedure.alternate?.text || order.procedure.code;
  return { ...(codings.length ? { coding: codings } : {}), ...(text ? { text } : {}) };
}

export function orderIdentifiers(order: Order, maps: FhirMappings): { placer: Identifier; all: Identifier[] } {
  const vars = templateVars(order);
  if (!order.placerOrderNumber) throw new FhirMappingError('the order has no placer order number');
  const placer: Identifier = {
    type: { coding: [IDENTIFIER_TYPE.PLAC] },
    system: maps.system('placer', { ...vars, authority: order.placerAuthority }),
    value: order.placerOrderNumber,
  };
  const all = [placer];
  if (order.fillerOrderNumber) all.push({ type: { coding: [IDENTIFIER_TYPE.FILL] }, system: maps.system('filler', vars), value: order.fillerOrderNumber });
  if (order.accessionNumber) all.push(accessionIdentifier(order, maps, order.accessionNumber));
  return { placer, all };
}

export const accessionIdentifier = (order: Order, maps: FhirMappings, value: string): Identifier => ({
  type: { coding: [IDENTIFIER_TYPE.ACSN] },
  system: maps.system('accession', templateVars(order)),
  value,
});

/**
 * The order, matched by its placer number: conditional create, so an order the EMR already wrote to the chart
 * is linked to, not duplicated or overwritten. Status stays active: the AI result is preliminary and the order
 * is complete only when a physician signs the final report.
 */
export function serviceRequestEntry({ ctx, maps, refs }: BuildInput): BundleEntry<ServiceRequest> {
  const { order } = ctx;
  const { placer, all } = orderIdentifiers(order, maps);
  const provider = order.orderingProvider;
  const providerName = provider ? [provider.given, provider.family].filter(Boolean).join(' ') : '';
  const sr: ServiceRequest = {
    resourceType: 'ServiceRequest',
    identifier: all,
    status: 'active',
    intent: 'order',
    code: procedureConcept(order, maps),
    subject: { reference: refs.patient },
    ...(order.priority && PRIORITIES.has(order.priority) ? { priority: order.priority as ServiceRequest['priority'] } : {}),
    ...(order.orderDateTime ? { authoredOn: order.orderDateTime } : {}),
    ...(provider?.id || providerName
      ? {
          requester: {
            ...(provider?.id ? { identifier: { system: maps.system('orderingProvider', templateVars(order)), value: provider.id } } : {}),
            ...(providerName ? { display: providerName } : {}),
          },
        }
      : {}),
  };
  return {
    fullUrl: refs.serviceRequest,
    resource: sr,
    request: { method: 'POST', url: 'ServiceRequest', ifNoneExist: `identifier=${encodeURIComponent(`${placer.system}|${placer.value}`)}` },
  };
}
