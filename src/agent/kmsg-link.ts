/**
 * Connects the kernel-log source (src/sources/kmsg.ts) to the agent: XID lines are resolved to a
 * GPU through the backend's inventory (normalised PCI bus ids) and stored as health events.
 */
import type { Logger } from 'pino';
import type { KmsgStatus } from '../api/types.js';
import type { HealthEventInput } from '../events/types.js';
import type { DeviceInfo } from '../nvml/types.js';

export interface KmsgLinkOptions {
  /** null = disabled. */
  path: string | null;
  stateDir: string;
  log: Logger;
  /** Kernel short PCI id ("0000:41:00") -> GPU, null when unknown. */
  resolvePci: (short: string) => DeviceInfo | null;
  onEvent: (input: HealthEventInput) => void;
}

export class KmsgLink {
  private state = 'starting';
  constructor(private readonly o: KmsgLinkOptions) {}

  async start(): Promise<void> {
    this.state = this.o.path === null ? 'disabled' : 'unavailable: kernel-log source not integrated yet';
  }

  status(): KmsgStatus {
    return { enabled: this.o.path !== null, path: this.o.path, state: this.state };
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
  }
}
