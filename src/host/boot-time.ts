/**
 * The wall-clock time this host booted, the one place that reads it from /proc (the boot id is in
 * ./boot-id.ts).
 */
import * as fs from 'node:fs';

/** Wall-clock ms of boot: now - /proc/uptime (10 ms resolution), else btime from /proc/stat, else now. */
export function bootTimeMs(): number {
  try {
    const up = Number.parseFloat(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0] ?? '');
    if (Number.isFinite(up)) return Date.now() - Math.round(up * 1000);
  } catch {
    /* fall through */
  }
  try {
    const m = /^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'));
    if (m?.[1]) return Number(m[1]) * 1000;
  } catch {
    /* fall through */
  }
  return Date.now();
}
