/**
 * The fault history's file (src/agent/fault-history.ts): kept across "reboots" (new boot ids) in a
 * real state directory, written atomically, bounded, a corrupt file replaced with one warning, and
 * the in-memory fallback when there is no state directory.
 */
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { FAULT_HISTORY_FILE, FaultHistory } from '../../src/agent/fault-history.js';
import { UNKNOWN_BOOT_ID, readBootId } from '../../src/host/boot-id.js';
import { FILE_LIMITS } from '../../src/util/bounded-file.js';
import { xidEventInput } from '../../src/xid/catalog.js';

const T0 = 1_780_000_000_000;
const xid79 = () => xidEventInput({ code: 79, gpuIndex: 1, gpuUuid: 'GPU-11111111-2222-3333-4444-555555555555', timeMs: T0, source: 'fake' });

function logger() {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

async function runBoot(dir: string | null, bootId: string, now: number) {
  const { log, lines } = logger();
  const h = new FaultHistory({ stateDir: dir, bootId, log, now: () => now });
  const out = h.observe(xid79());
  await h.flush();
  return { h, out, lines };
}

describe('fault history file', () => {
  it('survives restarts in the state directory and escalates after 2 reboots', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'navarch-fh-'));
    const a = await runBoot(dir, 'boot-a', T0);
    expect(a.out.action).toBe('reboot');
    const file = join(dir, FAULT_HISTORY_FILE);
    const stored = JSON.parse(readFileSync(file, 'utf8'));
    expect(stored.boots).toEqual([{ n: 1, id: 'boot-a', ms: T0 }]);
    expect(stored.entries).toEqual([
      { id: 'GPU-11111111-2222-3333-4444-555555555555/xid/79', key: 'gpu1/xid/79', xid: 79, seen: [{ n: 1, first: T0, last: T0 }] },
    ]);
    // A restart in the same boot changes nothing.
    const a2 = await runBoot(dir, 'boot-a', T0 + 1000);
    expect(a2.out.action).toBe('reboot');
    const b = await runBoot(dir, 'boot-b', T0 + 60_000);
    expect(b.out.action).toBe('reboot');
    const c = await runBoot(dir, 'boot-c', T0 + 120_000);
    expect(c.out).toMatchObject({ severity: 'critical', action: 'replace' });
    expect(c.out.metrics).toMatchObject({ reboots_since_first: '2', boots_seen: '3', escalated_from: 'reboot' });
    expect(c.h.status()).toMatchObject({ file, bootId: 'boot-c', boots: 3, faults: 1, escalated: 1, problem: null });
    expect(c.lines.filter((l) => /came back after 2 reboots: escalated to replace/.test(String(l.msg)))).toHaveLength(1);
    // Last-seen times that moved without a write are written at stop (flush).
    c.h.observe(xid79());
    const later = new FaultHistory({ stateDir: dir, bootId: 'boot-c', log: logger().log, now: () => T0 + 180_000 });
    later.observe(xid79());
    await later.flush();
    expect(JSON.parse(readFileSync(file, 'utf8')).entries[0].seen.at(-1)).toEqual({ n: 3, first: T0 + 120_000, last: T0 + 180_000 });
    // Atomic: no temp file left, and the file stays well under its read limit.
    expect(readdirSync(dir)).toEqual([FAULT_HISTORY_FILE]);
    expect(readFileSync(file).length).toBeLessThan(FILE_LIMITS.state);
  });

  it('a corrupt file is replaced by a fresh history, with one warning line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'navarch-fh-'));
    const file = join(dir, FAULT_HISTORY_FILE);
    writeFileSync(file, '{"v":1,"boots":[{"n":1,"id":"a"');
    const r = await runBoot(dir, 'boot-x', T0);
    const warns = r.lines.filter((l) => l.level === 40);
    expect(warns).toHaveLength(1);
    expect(warns[0]?.msg).toBe('fault history corrupt (not JSON): starting a fresh one');
    expect(r.out.action).toBe('reboot');
    expect(JSON.parse(readFileSync(file, 'utf8')).boots).toEqual([{ n: 1, id: 'boot-x', ms: T0 }]);
    // Too large or not a plain file: the same, with the reason.
    writeFileSync(file, 'x'.repeat(FILE_LIMITS.state + 10));
    const big = await runBoot(dir, 'boot-y', T0);
    expect(big.lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([
      `fault history unreadable (larger than ${FILE_LIMITS.state} bytes (${FILE_LIMITS.state + 10} bytes)): starting a fresh one`,
    ]);
  });

  it('a history that cannot be written is said once and in the status; detection goes on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'navarch-fh-'));
    // A state "directory" that is a file: every write fails with ENOTDIR, for root too.
    writeFileSync(join(dir, 'ro'), '');
    const { log, lines } = logger();
    const h = new FaultHistory({ stateDir: join(dir, 'ro'), bootId: 'a', log, now: () => T0 });
    await h.flush();
    expect(h.observe(xid79()).action).toBe('reboot');
    await h.flush();
    expect(lines.filter((l) => l.msg === 'cannot write the fault history')).toHaveLength(1);
    expect(h.status().problem).toMatch(/cannot be written/);
  });

  it('without a state directory it works in memory and says escalation across reboots is off', async () => {
    const a = await runBoot(null, 'boot-a', T0);
    expect(a.out.action).toBe('reboot');
    expect(a.h.status()).toMatchObject({ file: null, boots: 1, faults: 1, problem: expect.stringMatching(/no writable state directory/) });
    // Within one process the history still counts (it just cannot outlive it).
    expect(a.h.observe(xid79()).action).toBe('reboot');
  });

  it('reads the boot id from an injectable path; unreadable is "unknown", which disables escalation', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'navarch-fh-'));
    writeFileSync(join(dir, 'boot_id'), 'c0ffee00-1111-2222-3333-444455556666\n');
    expect(readBootId(join(dir, 'boot_id'))).toBe('c0ffee00-1111-2222-3333-444455556666');
    expect(readBootId(join(dir, 'missing'))).toBe(UNKNOWN_BOOT_ID);
    writeFileSync(join(dir, 'empty'), '\n');
    expect(readBootId(join(dir, 'empty'))).toBe(UNKNOWN_BOOT_ID);
    if (existsSync('/proc/sys/kernel/random/boot_id')) expect(readBootId()).toMatch(/^[0-9a-f-]{36}$/);
    const u = await runBoot(dir, UNKNOWN_BOOT_ID, T0);
    expect(u.h.status().problem).toMatch(/boot id cannot be read/);
  });
});
