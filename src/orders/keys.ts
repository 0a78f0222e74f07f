/** Seconds in a day: TTLs are configured in days. */
export const DAY = 86_400;

/**
 * The Redis key names of the intake's records under a prefix. Existing data is read with them: a renamed key
 * would lose every stored order, resend marker and message.
 */
export function orderKeys(prefix: string) {
  return {
    /** The order record (JSON OrderRecord) of a job. */
    order: (jobId: string) => `${prefix}:order:${jobId}`,
    /** The answer given to a message (JSON ResendMarker), by sender + MSH-10. */
    seen: (messageKey: string) => `${prefix}:seen:${messageKey}`,
    /** A dead-lettered or ignored message (JSON StoredMessage). */
    message: (id: string) => `${prefix}:message:${id}`,
    /** The ids of the stored messages of a kind, scored by their receive time. */
    messages: (kind: string) => `${prefix}:messages:${kind}`,
  };
}

export type OrderKeys = ReturnType<typeof orderKeys>;
