/**
 * The store against a hostile directory (issue 10, items 6 and 7): a lock naming a live but
 * unrelated process, records with a valid CRC but a foreign shape, a record of 60 MiB, and
 * directories or files of the wrong kind at the store's paths.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import pino from 'pino';
import type { HealthEventInput } from '../../src/events/types.js';
import { openEventStore, type DurableEventStore, type EventStoreOptions } from '../../src/store/event-store.js';
import { encodeLine } from '../../src/store/log-format.js';
import { kernelBootId, processStartTime } from '../../src/store/lock.js';
import { xidEventInput } from '../../src/xid/catalog.js';

const require = createRequire(import.meta.url);
function loadFlock(): ((fd: number) => boolean) | null {
  try {
    const a = require('../../build/Release/navarch_nvml.node') as { tryFlock?: (fd: number) => boolean };
    return typeof a.tryFlock === 'function' ? a.tryFlock : null;
  } catch {
    return null;
  }
}
const tryFlock = loadFlock();
if (!tryFlock) console.warn('[store-hostile.test] flock test skipped: build/Release/navarch_nvml.node has no tryFlock (run "npm run build:addon")');

let dir: string;
let root: string;
const open: DurableEventStore[] = [];
async function openStore(o: Partial<EventStoreOptions> = {}): Promise<DurableEventStore> {
  const s = await openEventStore({ dir, fsync: true, bootId: 'boot-a', ...o });
  open.push(s);
  return s;
}

function captureLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

function input(over: Partial<HealthEventInput> = {}): HealthEventInput {
  return {
    type: 'xid',
    system: 'DRIVER',
    gpuIndex: 0,
    gpuUuid: 'GPU-0',
    metrics: {},
    message: 'm',
    timeMs: 1_700_000_000_000,
    severity: 'warning',
    action: 'none',
    citation: 't',
    source: 'agent',
    key: 'gpu0/k',
    fault: 'none',
    ...over,
  };
}

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'store-hostile-'));
  dir = path.join(root, 'events');
});
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('lock (item 6)', () => {
  it.skipIf(!tryFlock)('flock: a lock file naming a live unrelated pid of this boot does not block; a real holder does', async () => {
    fs.mkdirSync(dir, { recursive: true });
    const lock = path.join(dir, 'events.lock');
    // pid 1 is alive and of this boot: the pid-file lock would refuse this (see store.test.ts).
    fs.writeFileSync(lock, `1 ${kernelBootId()}\n`);
    const { logger, lines } = captureLogger();
    const s = await openStore({ logger });
    expect(s.stats().lock).toBe('flock');
    expect(lines.some((l) => String(l.msg).includes('no longer holds its lock') && l.pid === 1)).toBe(true);
    expect(fs.readFileSync(lock, 'utf8').split(' ')[0]).toBe(String(process.pid));
    await s.close();
    open.splice(0);
    expect(fs.existsSync(lock)).toBe(false);

    // A holder of the flock (another open file description, as another process would have) blocks.
    fs.writeFileSync(lock, '4242 x\n');
    const fd = fs.openSync(lock, 'r+');
    try {
      expect(tryFlock!(fd)).toBe(true);
      await expect(openEventStore({ dir, bootId: 'boot-a' })).rejects.toThrow(/in use by process 4242/);
    } finally {
      fs.closeSync(fd); // the kernel releases the lock with the last close
    }
    const s2 = await openStore();
    expect(s2.stats().lock).toBe('flock');
  });

  it('pid-file lock (no addon): a live pid whose start time differs from the recorded one was reused: stale', async () => {
    fs.mkdirSync(dir, { recursive: true });
    const lock = path.join(dir, 'events.lock');
    const start1 = processStartTime(1);
    expect(start1).not.toBeNull();
    fs.writeFileSync(lock, `1 ${kernelBootId()} ${start1}\n`);
    await expect(openEventStore({ dir, tryFlock: null })).rejects.toThrow(/in use by process 1/);
    fs.writeFileSync(lock, `1 ${kernelBootId()} ${Number(start1) + 12345}\n`);
    const s = await openStore({ tryFlock: null });
    expect(s.stats().lock).toBe('pidfile');
    expect(fs.readFileSync(lock, 'utf8').trim()).toBe(`${process.pid} ${kernelBootId()} ${processStartTime('self')}`);
  });
});

describe('foreign records (item 7)', () => {
  it('a record with a valid CRC but a foreign shape is dropped at open, counted, logged once, and gone after the rewrite', async () => {
    const s0 = await openStore();
    const good = await s0.append(input({ key: 'good' }));
    await s0.close();
    open.splice(0);
    const log = path.join(dir, 'events.log');
    const foreign = [
      { t: 'p', e: { id: 'x1', key: 'gpu0/bad', count: 'many' }, s: {} },
      { t: 'p', e: { ...good.event, id: 'x2', metrics: { n: 7 } }, s: {} },
      { t: 'f', f: { key: 'gpu1/bad' }, b: 'boot-a' },
      { t: 'z', hello: 1 },
      null,
    ];
    for (const r of foreign) fs.appendFileSync(log, encodeLine(r));
    const { logger, lines } = captureLogger();
    const s = await openStore({ logger });
    expect(s.pending().map((e) => e.id)).toEqual([good.event.id]);
    expect(s.activeFaults()).toEqual([]);
    expect(s.stats().badRecords).toBe(foreign.length);
    const warned = lines.filter((l) => String(l.msg).includes('never writes'));
    expect(warned).toHaveLength(1);
    expect(warned[0]?.badRecords).toBe(foreign.length);
    await s.close();
    open.splice(0);
    expect(fs.readFileSync(log, 'utf8')).not.toContain('gpu0/bad');
    const s2 = await openStore();
    expect(s2.stats().badRecords).toBe(0);
    expect(s2.pending().map((e) => e.id)).toEqual([good.event.id]);
  });

  it('a 60 MiB record is skipped without being read whole, and a new critical XID is still stored', async () => {
    const s0 = await openStore();
    const good = await s0.append(input({ key: 'good' }));
    await s0.close();
    open.splice(0);
    const log = path.join(dir, 'events.log');
    const huge = encodeLine({ t: 'p', e: { ...good.event, id: 'huge', key: 'gpu0/huge', message: 'x'.repeat(60 * 1024 * 1024) }, s: {} });
    fs.appendFileSync(log, huge);
    expect(fs.statSync(log).size).toBeGreaterThan(60 * 1024 * 1024);
    const s = await openStore();
    const st = s.stats();
    expect(st.oversizeRecords).toBe(1);
    expect(st.bytesOnDisk).toBeLessThan(64 * 1024);
    expect(s.pending().map((e) => e.id)).toEqual([good.event.id]);
    const xid = await s.append(xidEventInput({ code: 79, gpuIndex: 2, gpuUuid: 'GPU-2', timeMs: Date.now(), source: 'kmsg' }));
    expect(xid.event.severity).toBe('critical');
    expect(s.pending().map((e) => e.key)).toContain('gpu2/xid/79');
    expect(s.activeFaults().map((f) => f.key)).toEqual(['gpu2/xid/79']);
  });
});

describe('misplaced store paths (item 7)', () => {
  it('a directory at events.log or events.lock is moved aside with a log line; the store opens with its state', async () => {
    const s0 = await openStore();
    await s0.close();
    open.splice(0);
    fs.rmSync(path.join(dir, 'events.log'));
    fs.mkdirSync(path.join(dir, 'events.log'));
    fs.writeFileSync(path.join(dir, 'events.log', 'inside'), 'keep me');
    fs.mkdirSync(path.join(dir, 'events.lock'));
    const { logger, lines } = captureLogger();
    const s = await openStore({ logger, now: () => Date.UTC(2026, 11, 3, 8, 0, 0) });
    expect(s.stats().misplaced).toBe(2);
    const names = fs.readdirSync(dir).sort();
    expect(names).toContain('events.log.misplaced-2026-12-03T08-00-00-000Z');
    expect(names).toContain('events.lock.misplaced-2026-12-03T08-00-00-000Z');
    expect(fs.readFileSync(path.join(dir, 'events.log.misplaced-2026-12-03T08-00-00-000Z', 'inside'), 'utf8')).toBe('keep me');
    expect(fs.statSync(path.join(dir, 'events.log')).isFile()).toBe(true);
    expect(lines.filter((l) => String(l.msg).includes('moved aside')).map((l) => l.found)).toEqual(['directory', 'directory']);
    await s.append(input());
    expect(s.pendingCount()).toBe(1);
  });

  it('a file where the store directory belongs is moved aside; the store opens', async () => {
    fs.writeFileSync(dir, 'not a directory');
    const s = await openStore();
    expect(s.stats().misplaced).toBe(1);
    expect(fs.statSync(dir).isDirectory()).toBe(true);
    const aside = fs.readdirSync(root).filter((n) => n.startsWith('events.misplaced-'));
    expect(aside).toHaveLength(1);
    expect(fs.readFileSync(path.join(root, aside[0]!), 'utf8')).toBe('not a directory');
    await s.append(input({ severity: 'critical' }));
    expect(s.pending()).toHaveLength(1);
  });
});
