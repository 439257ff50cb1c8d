/**
 * The I/O around reboot-aware escalation (the logic is src/xid/reboot-escalation.ts): the fault
 * history lives in `<state dir>/fault-history.json`, read once at start (bounded, FILE_LIMITS.state)
 * and written atomically when it changes (a new fault, or a known fault in a new boot), one write
 * at a time, the latest state winning; last-seen times alone are written at stop. A file that cannot be read or parsed is replaced by a fresh
 * history, with one warning line. Without a state directory the history is kept in memory only
 * (a reboot then cannot be seen: no escalation across reboots, said in /status).
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { HealthEventInput } from '../events/types.js';
import { UNKNOWN_BOOT_ID } from '../host/boot-id.js';
import { writeFileAtomic } from '../util/atomic-file.js';
import { BoundedFileError, FILE_LIMITS, readBoundedTextSync } from '../util/bounded-file.js';
import { HistoryFormatError, RebootHistory, emptyHistory, parseHistory, trackedXid, type FaultHistoryData } from '../xid/reboot-escalation.js';

export const FAULT_HISTORY_FILE = 'fault-history.json';

export interface FaultHistoryStatus {
  /** Where the history is kept; null = in memory only. */
  file: string | null;
  bootId: string;
  /** Boots remembered (this one included), faults remembered, escalations since start. */
  boots: number;
  faults: number;
  escalated: number;
  /** Why escalation across reboots cannot work, null when it can. */
  problem: string | null;
}

export interface FaultHistoryOptions {
  /** The state directory; null = in memory only. */
  stateDir: string | null;
  bootId: string;
  log: Logger;
  now?: () => number;
}

/** Read the stored history; a missing file is an empty history, anything unreadable is reported and replaced. */
function load(file: string, log: Logger): FaultHistoryData {
  let text: string;
  try {
    text = readBoundedTextSync(file, FILE_LIMITS.state);
  } catch (err) {
    if (err instanceof BoundedFileError && err.code === 'ENOENT') return emptyHistory();
    log.warn({ file, reason: (err as Error).message }, `fault history unreadable (${(err as Error).message}): starting a fresh one`);
    return emptyHistory();
  }
  try {
    return parseHistory(text);
  } catch (err) {
    const reason = err instanceof HistoryFormatError ? err.message : String(err);
    log.warn({ file, reason }, `fault history corrupt (${reason}): starting a fresh one`);
    return emptyHistory();
  }
}

export class FaultHistory {
  private readonly history: RebootHistory;
  private readonly file: string | null;
  private readonly log: Logger;
  private readonly now: () => number;
  private writing: Promise<void> | null = null;
  private again = false;
  private writeFailing = false;
  private escalated = 0;
  /** Last-seen times moved without a write (written at stop, so the look-back sees them). */
  private touched = false;

  constructor(o: FaultHistoryOptions) {
    this.log = o.log;
    this.now = o.now ?? Date.now;
    this.file = o.stateDir === null ? null : join(o.stateDir, FAULT_HISTORY_FILE);
    const data = this.file === null ? emptyHistory() : load(this.file, this.log);
    this.history = new RebootHistory(data, o.bootId === UNKNOWN_BOOT_ID ? null : o.bootId, this.now());
    if (this.history.newBoot) this.save();
  }

  /** The event, escalated when it is a tracked XID back after the reboot threshold (see reboot-escalation.ts). */
  observe(input: HealthEventInput): HealthEventInput {
    const r = this.history.observe(input, this.now());
    if (r.changed) this.save();
    else if (trackedXid(input) !== null) this.touched = true;
    if (r.escalation) {
      this.escalated++;
      if (r.changed) {
        this.log.warn(
          {
            key: input.key,
            gpu: input.gpuIndex,
            rebootsSinceFirst: r.escalation.rebootsSinceFirst,
            bootsSeen: r.escalation.bootsSeen,
            from: r.escalation.from,
          },
          `${input.key} came back after ${r.escalation.rebootsSinceFirst} reboots: escalated to replace`,
        );
      }
    }
    return r.input;
  }

  /** An operator cleared the fault under `key`: its count starts again. */
  forgetKey(key: string): void {
    if (this.history.forgetKey(key)) this.save();
  }

  status(): FaultHistoryStatus {
    const problem =
      this.history.bootN === null
        ? 'the boot id cannot be read: a reboot cannot be told from a restart, XIDs do not escalate'
        : this.file === null
          ? 'no writable state directory: the history is lost on restart, XIDs do not escalate across reboots'
          : this.writeFailing
            ? 'the history cannot be written (see the log): escalation may miss reboots'
            : null;
    return {
      file: this.file,
      bootId: this.history.bootId ?? UNKNOWN_BOOT_ID,
      boots: this.history.bootsSeen(),
      faults: this.history.size(),
      escalated: this.escalated,
      problem,
    };
  }

  /** Write what only moved last-seen times, and wait for the last write (at stop). */
  async flush(): Promise<void> {
    if (this.touched) this.save();
    while (this.writing) await this.writing;
  }

  private save(): void {
    if (this.file === null) return;
    if (this.writing) {
      this.again = true;
      return;
    }
    const file = this.file;
    this.writing = (async () => {
      do {
        this.again = false;
        this.touched = false;
        try {
          await writeFileAtomic(file, `${JSON.stringify(this.history.toJSON())}\n`);
          if (this.writeFailing) this.log.info({ file }, 'fault history written again');
          this.writeFailing = false;
        } catch (err) {
          // One line per failure streak, not one per write.
          if (!this.writeFailing) this.log.error({ file, err: (err as Error).message }, 'cannot write the fault history');
          this.writeFailing = true;
        }
      } while (this.again);
      this.writing = null;
    })();
  }
}
