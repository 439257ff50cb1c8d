/**
 * This boot's id: the kernel's random per-boot UUID. The one place the agent reads it (the event
 * store clears faults of another boot; the fault history counts reboots; the kernel-log cursor
 * knows its records are gone). The path is injectable so a test can "reboot" an agent by pointing
 * NAVARCH_BOOT_ID_PATH at another file (src/config/config.ts).
 */
import { readBoundedTextSync } from '../util/bounded-file.js';

export const BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';

/** What readBootId returns when the id cannot be read: no reboot can be told from a restart. */
export const UNKNOWN_BOOT_ID = 'unknown';

/** The boot id at `path` (trimmed, at most 128 characters), or UNKNOWN_BOOT_ID when unreadable or empty. */
export function readBootId(path: string = BOOT_ID_PATH): string {
  try {
    const id = readBoundedTextSync(path, 4096).trim().slice(0, 128);
    return id === '' ? UNKNOWN_BOOT_ID : id;
  } catch {
    return UNKNOWN_BOOT_ID;
  }
}
