/**
 * Connects the kernel-log source (src/sources/kmsg.ts) to the agent: NVRM XID lines are resolved
 * to a GPU through the backend's inventory (normalised PCI bus ids) and stored as health events.
 * A kernel log that cannot be opened is reported in /status and the logs; the agent keeps running
 * on NVML events alone.
 */
import type { Logger } from 'pino';
import type { KmsgStatus } from '../api/types.js';
import type { HealthEventInput } from '../events/types.js';
import type { DeviceInfo } from '../nvml/types.js';
import { KmsgSource } from '../sources/kmsg.js';

export interface KmsgLinkOptions {
  /** null = disabled. */
  path: string | null;
  /** auto: the addon's reader thread when it loads; js: reads on the JavaScript thread. */
  reader?: 'auto' | 'js';
  /** Where the read cursor is kept; null = nowhere (no writable state directory). */
  stateDir: string | null;
  /** This boot's id (src/host/boot-id.ts); default: the kernel's. */
  bootId?: string;
  log: Logger;
  /** Kernel short PCI id ("0000:41:00") -> GPU, null when unknown. */
  resolvePci: (short: string) => DeviceInfo | null;
  /** Store the event; the returned promise settles when it is durable. */
  onEvent: (input: HealthEventInput) => Promise<void>;
}

export class KmsgLink {
  private state = 'starting';
  private source: KmsgSource | null = null;
  private unresolved = 0;

  constructor(private readonly o: KmsgLinkOptions) {}

  async start(): Promise<void> {
    if (this.o.path === null) {
      this.state = 'disabled';
      return;
    }
    const source = new KmsgSource({
      path: this.o.path,
      reader: this.o.reader ?? 'auto',
      ...(this.o.stateDir !== null ? { stateDir: this.o.stateDir } : {}),
      ...(this.o.bootId !== undefined ? { bootId: this.o.bootId } : {}),
      logger: this.o.log,
      resolveGpu: (short) => {
        const d = this.o.resolvePci(short);
        if (!d) {
          this.unresolved++;
          return null;
        }
        return { index: d.index, uuid: d.uuid };
      },
      onEvent: (input) => this.o.onEvent(input),
    });
    try {
      await source.start();
      this.source = source;
      this.state = 'running';
    } catch (err) {
      this.state = `unavailable: ${(err as Error).message}`;
      this.o.log.warn({ path: this.o.path, err: (err as Error).message }, 'kernel log unavailable: XIDs come from NVML events only');
    }
  }

  status(): KmsgStatus {
    const st = this.source?.stats();
    return {
      enabled: this.o.path !== null,
      path: this.o.path,
      state: this.state,
      ...(st
        ? {
            linesRead: st.records,
            xidsMatched: st.xids,
            unresolvedPci: this.unresolved,
            overruns: st.overruns,
            lostRecords: st.missedRecords,
            lastSeq: st.lastSeq,
            mode: st.mode,
            reader: st.reader,
            queueDropped: st.queueDropped,
          }
        : {}),
    };
  }

  async stop(): Promise<void> {
    if (this.source) await this.source.stop();
    if (this.state === 'running') this.state = 'stopped';
  }
}
