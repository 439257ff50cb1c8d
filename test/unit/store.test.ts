import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import type { HealthEventInput, Severity } from '../../src/events/types.js';
import { openEventStore, readStoredFaults, type DurableEventStore, type EventStoreOptions } from '../../src/store/event-store.js';
import { nodeStoreFs, type StoreFs } from '../../src/store/fs-adapter.js';
import { poll } from '../helpers/wait.js';
import { xidEventInput } from '../../src/xid/catalog.js';

function input(over: Partial<HealthEventInput> = {}): HealthEventInput {
  return {
    type: 'thermal',
    system: 'THERMAL',
    gpuIndex: 0,
    gpuUuid: 'GPU-0',
    metrics: { temperature: '90' },
    message: 'hot',
    timeMs: 1_700_000_000_000,
    severity: 'warning',
    action: 'none',
    citation: 'test',
    source: 'telemetry',
    key: 'gpu0/thermal',
    fault: 'none',
    ...over,
  };
}

let dir: string;
const open: DurableEventStore[] = [];
async function openStore(o: Partial<EventStoreOptions> = {}): Promise<DurableEventStore> {
  const s = await openEventStore({ dir, fsync: true, bootId: 'boot-a', ...o });
  open.push(s);
  return s;
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'store-test-'));
});
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('event store basics', () => {
  it('assigns unique time-sortable ids, persists before resolving, keeps events until acked', async () => {
    const s = await openStore();
    const a = await s.append(input({ key: 'k1' }));
    const b = await s.append(input({ key: 'k2', severity: 'critical' }));
    expect(a.coalesced).toBe(false);
    expect(a.event.id).not.toBe(b.event.id);
    expect(a.event.id < b.event.id).toBe(true);
    expect(a.event.count).toBe(1);
    await s.close();
    const s2 = await openStore();
    expect(s2.pending().map((e) => e.id)).toEqual([a.event.id, b.event.id]);
    await s2.ack([{ id: a.event.id, count: 1 }]);
    await s2.close();
    const s3 = await openStore();
    expect(s3.pending().map((e) => e.id)).toEqual([b.event.id]);
    // ids stay ordered across a restart even if the clock went backwards
    const c = await s3.append(input({ key: 'k3', timeMs: 0 }));
    expect(c.event.id > b.event.id).toBe(true);
  });

  it('rejects bad input with a one-line error', async () => {
    const s = await openStore();
    await expect(s.append(input({ key: '' }))).rejects.toThrow(/key must be a non-empty string/);
    await expect(s.append(input({ severity: 'fatal' as Severity }))).rejects.toThrow(/bad severity "fatal"/);
    await expect(openEventStore({ dir, maxBytes: 10 })).rejects.toThrow(/maxBytes must be/);
  });

  it('refuses a second store on the same directory while the first is open', async () => {
    await openStore();
    await expect(openEventStore({ dir })).rejects.toThrow(/in use by process/);
  });

  it('pid-file lock (no addon): a lock left by a live pid of another boot is stale (pids are reused after a reboot); of this boot it holds', async () => {
    fs.mkdirSync(dir, { recursive: true });
    const lock = path.join(dir, 'events.lock');
    // pid 1 is always alive; the boot id is not this one.
    fs.writeFileSync(lock, '1 00000000-0000-0000-0000-000000000000\n');
    const s = await openStore({ tryFlock: null });
    await s.close();
    const bootId = fs.existsSync('/proc/sys/kernel/random/boot_id') ? fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() : null;
    if (bootId) {
      fs.writeFileSync(lock, `1 ${bootId}\n`);
      await expect(openEventStore({ dir, tryFlock: null })).rejects.toThrow(/in use by process 1/);
    }
    // The old format (pid only) is still honoured.
    fs.writeFileSync(lock, '1\n');
    await expect(openEventStore({ dir, tryFlock: null })).rejects.toThrow(/in use by process 1/);
    fs.rmSync(lock);
  });

  it('readStoredFaults reads the active faults without a lock and without writing anything', async () => {
    expect(await readStoredFaults(path.join(dir, 'nothing-here'))).toEqual([]);
    const s = await openStore();
    await s.append(input({ key: 'gpu1/xid/79', type: 'xid', severity: 'critical', action: 'reboot', fault: 'raise', gpuIndex: 1 }));
    // Beside an open (locked) store it still reads.
    expect((await readStoredFaults(dir, { bootId: 'boot-a' })).map((f) => f.key)).toEqual(['gpu1/xid/79']);
    await s.close();
    const log = path.join(dir, 'events.log');
    const before = fs.statSync(log);
    const names = fs.readdirSync(dir).sort();
    const faults = await readStoredFaults(dir, { bootId: 'boot-a' });
    expect(faults.map((f) => [f.key, f.gpuIndex, f.severity])).toEqual([['gpu1/xid/79', 1, 'critical']]);
    const after = fs.statSync(log);
    expect([after.ino, after.size, after.mtimeMs]).toEqual([before.ino, before.size, before.mtimeMs]);
    expect(fs.readdirSync(dir).sort()).toEqual(names);
    // A fault of another boot is gone (a reboot reset the GPU), as the store's own open() decides.
    expect(await readStoredFaults(dir, { bootId: 'boot-b' })).toEqual([]);
  });

  it('calls onAppend listeners for new and coalesced appends', async () => {
    const s = await openStore();
    const seen: boolean[] = [];
    const off = s.onAppend((r) => seen.push(r.coalesced));
    await s.append(input());
    await s.append(input());
    off();
    await s.append(input());
    expect(seen).toEqual([false, true]);
  });
});

describe('coalescing', () => {
  it('a storm of 100k identical events becomes one event with the exact count, in flat memory', async () => {
    const s = await openStore();
    const gc = (() => {
      v8.setFlagsFromString('--expose-gc');
      return vm.runInNewContext('gc') as () => void;
    })();
    const N = 100_000;
    const chunk = 2_000;
    // warm up, then measure
    await s.append(input({ timeMs: 1 }));
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 1; i < N; i += chunk) {
      const ps: Promise<unknown>[] = [];
      for (let j = i; j < Math.min(N, i + chunk); j++) ps.push(s.append(input({ timeMs: 1 + j })));
      await Promise.all(ps);
    }
    gc();
    const after = process.memoryUsage().heapUsed;
    const p = s.pending();
    expect(p).toHaveLength(1);
    expect(p[0]?.count).toBe(N);
    expect(p[0]?.firstTimeMs).toBe(1);
    expect(p[0]?.lastTimeMs).toBe(N);
    expect(after - before).toBeLessThan(16 * 1024 * 1024);
    const st = s.stats();
    expect(st.coalesced).toBe(N - 1);
    // group commit: far fewer commits than appends; the log stays small through compaction
    expect(st.commits).toBeLessThan(N / 10);
    expect(st.bytesOnDisk).toBeLessThan(2 * 1024 * 1024);
    await s.close();
    const s2 = await openStore();
    expect(s2.pending()[0]?.count).toBe(N);
  });

  it('same key from nvml and kmsg within the window is one occurrence; per-source counts, count = max', async () => {
    const s = await openStore();
    const t = 1_700_000_000_000;
    const nv = xidEventInput({ code: 79, gpuIndex: 3, gpuUuid: 'GPU-3', timeMs: t, source: 'nvml' });
    const km = xidEventInput({ code: 79, gpuIndex: 3, gpuUuid: 'GPU-3', timeMs: t + 800, source: 'kmsg', pid: 12, processName: 'python3' });
    expect(nv.key).toBe('gpu3/xid/79');
    expect(km.key).toBe(nv.key);
    await s.append(nv);
    const r = await s.append(km);
    expect(r.coalesced).toBe(true);
    expect(r.event.count).toBe(1);
    expect(r.event.metrics.pid).toBe('12'); // kmsg adds what NVML did not know
    // storm: nvml sees 3 more, kmsg sees the same 3
    for (let i = 1; i <= 3; i++) await s.append({ ...nv, timeMs: t + i * 1000 });
    for (let i = 1; i <= 3; i++) await s.append({ ...km, timeMs: t + i * 1000 + 500 });
    expect(s.pending()[0]?.count).toBe(4);
    // a kmsg report long after every nvml one is a new occurrence
    await s.append({ ...km, timeMs: t + 60_000 });
    expect(s.pending()[0]?.count).toBe(5);
    expect(s.stats().crossSourceMerged).toBe(4);
    // one active fault, counted per occurrence
    const f = s.activeFaults();
    expect(f).toHaveLength(1);
    expect(f[0]?.count).toBe(5);
  });

  it('honours input.count (occurrences a producer already merged), also across sources', async () => {
    const s = await openStore();
    const t = 1_700_000_000_000;
    const nv = { ...xidEventInput({ code: 13, gpuIndex: 0, gpuUuid: 'GPU-0', timeMs: t, source: 'nvml' }), count: 1000 };
    await s.append(nv);
    for (let i = 0; i < 3; i++) await s.append(xidEventInput({ code: 13, gpuIndex: 0, gpuUuid: 'GPU-0', timeMs: t + i, source: 'kmsg' }));
    expect(s.pending()[0]?.count).toBe(1000);
    await s.append({ ...nv, count: 5, timeMs: t + 5 });
    expect(s.pending()[0]?.count).toBe(1005);
    await expect(s.append({ ...nv, count: 0 })).rejects.toThrow(/count must be a positive integer/);
    await expect(s.append({ ...nv, count: 1.5 })).rejects.toThrow(/count must be a positive integer/);
  });

  it('the second source arriving after the first was acked does not make a second event', async () => {
    const s = await openStore();
    const t = 1_700_000_000_000;
    const nv = xidEventInput({ code: 48, gpuIndex: 1, gpuUuid: 'GPU-1', timeMs: t, source: 'nvml' });
    await s.append(nv);
    await s.ack(s.pending());
    const r = await s.append({ ...nv, source: 'kmsg', timeMs: t + 2000 });
    expect(r.coalesced).toBe(true);
    expect(s.pendingCount()).toBe(0);
    // but a later one is new
    await s.append({ ...nv, source: 'kmsg', timeMs: t + 30_000 });
    expect(s.pendingCount()).toBe(1);
  });

  it('ack with a count that grew after sending keeps the remainder pending (new id), exact counts', async () => {
    const s = await openStore();
    await s.append(input({ timeMs: 100 }));
    await s.append(input({ timeMs: 200 }));
    const sent = s.pending();
    expect(sent[0]?.count).toBe(2);
    await s.append(input({ timeMs: 300 }));
    await s.append(input({ timeMs: 400 }));
    await s.ack(sent.map((e) => ({ id: e.id, count: e.count })));
    const left = s.pending();
    expect(left).toHaveLength(1);
    expect(left[0]?.count).toBe(2);
    expect(left[0]?.id).not.toBe(sent[0]?.id);
    expect(left[0]?.firstTimeMs).toBe(300);
    expect(left[0]?.lastTimeMs).toBe(400);
    // acking the old id again is a no-op; the remainder survives a restart
    await s.ack(sent);
    await s.close();
    const s2 = await openStore();
    expect(s2.pending().map((e) => [e.id, e.count])).toEqual([[left[0]?.id, 2]]);
    await s2.ack(s2.pending());
    expect(s2.pendingCount()).toBe(0);
  });
});

describe('durability and compaction', () => {
  it('lists an event for sending once it is in the log file, while its fdatasync runs; the ack is written after that fsync', async () => {
    // A file system whose fdatasync waits for the test: the send must not wait for it.
    let gate: (() => void) | null = null;
    const order: string[] = [];
    const gatedFs: StoreFs = {
      ...nodeStoreFs,
      async openAppend(p) {
        const f = await nodeStoreFs.openAppend(p);
        return {
          ...f,
          append: async (buf: Buffer) => {
            order.push(`write ${buf.toString().includes('"t":"a"') ? 'ack' : 'put'}`);
            await f.append(buf);
          },
          datasync: async () => {
            if (gate === null) await new Promise<void>((r) => (gate = r));
            order.push('fsync');
            await f.datasync();
          },
          truncate: (n: number) => f.truncate(n),
          size: () => f.size(),
          close: () => f.close(),
        };
      },
    };
    const s = await openStore({ fs: gatedFs });
    let woke = 0;
    s.onPending(() => woke++);
    let appended = false;
    const appending = s.append(input()).then(() => (appended = true));
    await poll('the event listed while its fsync waits', () => s.pending().length === 1);
    expect(woke).toBeGreaterThan(0);
    expect(appended).toBe(false); // durable only after the fsync
    const [ev] = s.pending();
    const acking = s.ack([{ id: ev!.id, count: ev!.count }]);
    expect(s.pendingCount()).toBe(0);
    await new Promise((r) => setTimeout(r, 20));
    expect(order).toEqual(['write put']); // the ack waits for the put's fsync
    (gate as unknown as () => void)();
    gate = () => undefined;
    await appending;
    await acking;
    expect(order).toEqual(['write put', 'fsync', 'write ack', 'fsync']);
    await s.close();
    const again = await openStore();
    expect(again.pendingCount()).toBe(0);
  });

  it('compacts when the log grows and keeps the same state across reopen', async () => {
    const s = await openStore({ maxBytes: 256 * 1024 });
    for (let i = 0; i < 3000; i++) await s.append(input({ key: `k${i % 7}`, timeMs: i }));
    const st = s.stats();
    expect(st.compactions).toBeGreaterThan(1);
    expect(st.bytesOnDisk).toBeLessThanOrEqual(256 * 1024);
    const before = s.pending();
    await s.close();
    const s2 = await openStore({ maxBytes: 256 * 1024 });
    expect(s2.pending()).toEqual(before);
    expect(before.reduce((a, e) => a + e.count, 0)).toBe(3000);
  });

  it('a torn last line (crash mid-write) is detected and ignored; mid-file corruption is skipped', async () => {
    const s = await openStore();
    const a = await s.append(input({ key: 'a' }));
    const b = await s.append(input({ key: 'b' }));
    await s.close();
    const log = path.join(dir, 'events.log');
    fs.appendFileSync(log, '1234abcd {"t":"p","e":{"id":"tor');
    const s2 = await openStore();
    expect(s2.pending().map((e) => e.id)).toEqual([a.event.id, b.event.id]);
    expect(s2.stats().tornTails).toBe(1);
    await s2.close();
    // corrupt the line of event a (flip a byte in the JSON) but keep b intact
    const text = fs.readFileSync(log, 'utf8').split('\n');
    const i = text.findIndex((l) => l.includes(a.event.id));
    text[i] = text[i]!.replace('"key":"a"', '"key":"A"');
    fs.writeFileSync(log, text.join('\n'));
    const s3 = await openStore();
    expect(s3.pending().map((e) => e.id)).toEqual([b.event.id]);
    expect(s3.stats().corruptRecords).toBe(1);
  });

  it('reopen keeps active faults; a new boot clears reset/reboot faults but keeps replace ones; clear and clearFault end them', async () => {
    const s = await openStore({ bootId: 'boot-a' });
    await s.append(xidEventInput({ code: 79, gpuIndex: 0, gpuUuid: 'GPU-0', timeMs: 1, source: 'nvml' }));
    await s.append(xidEventInput({ code: 64, gpuIndex: 1, gpuUuid: 'GPU-1', timeMs: 2, source: 'nvml' }));
    await s.append(xidEventInput({ code: 13, gpuIndex: 2, gpuUuid: 'GPU-2', timeMs: 3, source: 'nvml' }));
    await s.append(input({ key: 'gpu3/thermal', fault: 'raise', severity: 'warning' }));
    expect(
      s
        .activeFaults()
        .map((f) => f.key)
        .sort(),
    ).toEqual(['gpu0/xid/79', 'gpu1/xid/64', 'gpu3/thermal']);
    await s.append(input({ key: 'gpu3/thermal', fault: 'clear', severity: 'info', message: 'cool again' }));
    expect(
      s
        .activeFaults()
        .map((f) => f.key)
        .sort(),
    ).toEqual(['gpu0/xid/79', 'gpu1/xid/64']);
    await s.close();
    const s2 = await openStore({ bootId: 'boot-a' });
    const f = s2.activeFaults().find((x) => x.key === 'gpu0/xid/79');
    expect(f?.action).toBe('reboot');
    expect(f?.gpuUuid).toBe('GPU-0');
    expect(s2.activeFaults()).toHaveLength(2);
    await s2.close();
    const s3 = await openStore({ bootId: 'boot-b' });
    expect(s3.activeFaults().map((x) => x.key)).toEqual(['gpu1/xid/64']);
    expect(await s3.clearFault('gpu1/xid/64')).toBe(true);
    expect(await s3.clearFault('gpu1/xid/64')).toBe(false);
    await s3.close();
    const s4 = await openStore({ bootId: 'boot-b' });
    expect(s4.activeFaults()).toEqual([]);
  });
});

describe('bounds and shedding', () => {
  it('over maxEvents sheds the oldest info events, then warnings, never critical ones', async () => {
    const s = await openStore({ maxEvents: 10 });
    const ids: Record<string, string> = {};
    let t = 0;
    const add = async (key: string, severity: Severity) => {
      const r = await s.append(input({ key, severity, timeMs: ++t }));
      ids[key] = r.event.id;
      return r;
    };
    for (let i = 0; i < 4; i++) await add(`info${i}`, 'info');
    for (let i = 0; i < 4; i++) await add(`warn${i}`, 'warning');
    for (let i = 0; i < 2; i++) await add(`crit${i}`, 'critical');
    await add('crit2', 'critical');
    expect(s.pending().map((e) => e.key)).not.toContain('info0');
    expect(s.pending().map((e) => e.key)).toContain('info1');
    for (let i = 3; i < 6; i++) await add(`crit${i}`, 'critical');
    let keys = s.pending().map((e) => e.key);
    expect(keys.filter((k) => k.startsWith('info'))).toEqual([]);
    expect(keys.filter((k) => k.startsWith('warn'))).toEqual(['warn0', 'warn1', 'warn2', 'warn3']);
    // a new info event when nothing lower can go: the new one is shed, append still resolves
    const r = await s.append(input({ key: 'info-late', severity: 'info', timeMs: ++t }));
    expect((r as { shed?: boolean }).shed).toBe(true);
    for (let i = 6; i < 10; i++) await add(`crit${i}`, 'critical');
    keys = s.pending().map((e) => e.key);
    expect(keys.filter((k) => k.startsWith('warn'))).toEqual([]);
    expect(keys.filter((k) => k.startsWith('crit'))).toHaveLength(10);
    const st = s.stats();
    expect(st.shedBySeverity).toEqual({ info: 5, warning: 4, critical: 0 });
    // criticals beyond maxEvents are still kept (up to a hard cap)
    await add('crit10', 'critical');
    expect(s.pendingCount()).toBe(11);
  });

  it('bounds bytes: a flood of distinct info events never grows the log past maxBytes', async () => {
    const maxBytes = 128 * 1024;
    const s = await openStore({ maxBytes, fsync: false, maxEvents: 100_000 });
    const big = 'x'.repeat(1500);
    const crit = await s.append(input({ key: 'crit', severity: 'critical', message: big }));
    for (let i = 0; i < 2000; i++) await s.append(input({ key: `i${i}`, severity: 'info', message: big, timeMs: i }));
    const st = s.stats();
    expect(st.bytesOnDisk).toBeLessThanOrEqual(maxBytes);
    expect(st.shed).toBeGreaterThan(1000);
    expect(s.pending().map((e) => e.id)).toContain(crit.event.id);
  });
});
