/** The one error type the event store throws, with a code callers can act on. */
export class EventStoreError extends Error {
  constructor(
    message: string,
    readonly code: 'DISK_FULL' | 'STORE_FULL' | 'CLOSED' | 'BAD_INPUT' | 'LOCKED' | 'IO',
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'EventStoreError';
  }
}

export function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}
