/**
 * Host uptime from /proc/uptime ("12345.67 54321.00": seconds since boot, then idle seconds), so
 * checks with a boot grace (fabric registration, the fabric manager) know how long the host is up.
 */
import { readBoundedTextSync } from '../util/bounded-file.js';

/** Seconds since boot, or null when the file is missing or malformed. Reads at most 256 bytes. */
export function readUptimeSeconds(path = '/proc/uptime'): number | null {
  let text: string;
  try {
    text = readBoundedTextSync(path, 256);
  } catch {
    return null;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s/.exec(text);
  return m ? Number(m[1]) : null;
}

/** Boot time (ms since the epoch) from the uptime, or null when unknown. */
export function bootTimeMs(nowMs: number = Date.now(), path?: string): number | null {
  const up = readUptimeSeconds(path);
  return up === null ? null : nowMs - Math.round(up * 1000);
}
