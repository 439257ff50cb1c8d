import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { HealthEventInput, Severity } from '../../src/events/types.js';
import { openEventStore, EventStoreError, type DurableEventStore } from '../../src/store/event-store.js';
import { nodeStoreFs, type StoreFile, type StoreFs } from '../../src/store/fs-adapter.js';

const TMPFS_BYTES = 512 * 1024;
const FILLER_BYTES = 160 * 1024;

function ev(i: number, severity: Severity): HealthEventInput {
  return {
    type: 'driver_error',
    system: 'DRIVER',
    gpuIndex: i % 8,
    gpuUuid: `GPU-${i % 8}`,
    metrics: { i: String(i) },
    message: `event ${i} `.padEnd(1500, 'x'),
    timeMs: 1_700_000_000_000 + i,
    severity,
    action: 'none',
    citation: 'enospc test',
    source: 'agent',
    key: `k/${i}`,
    fault: 'none',
  };
}

/**
 * A file-system layer with a byte quota over the files it manages, failing writes with ENOSPC
 * (after a short write, like the kernel) once the quota is used up.
 */
function quotaFs(quota: number): StoreFs & { free(bytes: number): void } {
  const sizes = new Map<string, number>();
  let extra = 0;
  const used = () => [...sizes.values()].reduce((a, b) => a + b, 0) + extra;
  const wrap = (p: string, f: StoreFile): StoreFile => ({
    async append(buf) {
      const room = Math.max(0, quota - used());
      if (buf.length > room) {
        if (room > 0) {
          await f.append(buf.subarray(0, room));
          sizes.set(p, (sizes.get(p) ?? 0) + room);
        }
        throw Object.assign(new Error(`ENOSPC: no space left on device, write`), { code: 'ENOSPC' });
      }
      await f.append(buf);
      sizes.set(p, (sizes.get(p) ?? 0) + buf.length);
    },
    datasync: () => f.datasync(),
    async truncate(len) {
      await f.truncate(len);
      sizes.set(p, len);
    },
    size: () => f.size(),
    close: () => f.close(),
  });
  return {
    free(bytes: number) {
      extra -= bytes;
    },
    async openAppend(p) {
      const f = await nodeStoreFs.openAppend(p);
      sizes.set(p, await f.size());
      return wrap(p, f);
    },
    async createTruncate(p) {
      const f = await nodeStoreFs.createTruncate(p);
      sizes.set(p, 0);
      return wrap(p, f);
    },
    readFile: (p) => nodeStoreFs.readFile(p),
    async rename(a, b) {
      await nodeStoreFs.rename(a, b);
      sizes.set(b, sizes.get(a) ?? 0);
      sizes.delete(a);
    },
    async unlink(p) {
      await nodeStoreFs.unlink(p);
      sizes.delete(p);
    },
    fsyncDir: (d) => nodeStoreFs.fsyncDir(d),
    mkdirp: (d) => nodeStoreFs.mkdirp(d),
    // the filler: space used by someone else
    ...{ _fill: (n: number) => (extra += n) },
  } as StoreFs & { free(bytes: number): void };
}

/**
 * Fill the disk with a mix of severities until a critical append is refused. Checks the shedding
 * order on the way, then frees the filler and checks the store recovers.
 */
async function fillScenario(s: DurableEventStore, freeFiller: () => void, reopen: () => Promise<DurableEventStore>) {
  const sevs: Severity[] = ['info', 'warning', 'critical', 'info', 'warning'];
  const resolvedCritical: string[] = [];
  let refused: EventStoreError | null = null;
  let sawDiskFull = false;
  let lastWarnShed = 0;
  for (let i = 0; i < 3000 && !refused; i++) {
    const sev = sevs[i % sevs.length] as Severity;
    try {
      const r = await s.append(ev(i, sev));
      if (sev === 'critical') resolvedCritical.push(r.event.id);
    } catch (e) {
      expect(sev).toBe('critical'); // non-critical appends never reject for a full disk
      refused = e as EventStoreError;
    }
    const st = s.stats();
    sawDiskFull ||= st.diskFull;
    expect(st.shedBySeverity.critical).toBe(0);
    if (st.shedBySeverity.warning > lastWarnShed) {
      // warnings go only once every older info event is gone
      expect(s.pending().filter((e) => e.severity === 'info' && e.timeMs < 1_700_000_000_000 + i)).toEqual([]);
      lastWarnShed = st.shedBySeverity.warning;
    }
  }
  expect(sawDiskFull).toBe(true);
  expect(refused).toBeInstanceOf(EventStoreError);
  expect(refused?.code).toBe('DISK_FULL');
  expect(refused?.message).toMatch(/disk full under .*cannot persist/);
  const st = s.stats();
  expect(st.shedBySeverity.info).toBeGreaterThan(0);
  expect(st.shedBySeverity.warning).toBeGreaterThan(0);
  expect(st.diskFull).toBe(true);
  expect(st.lastError).toMatch(/ENOSPC/);
  const pendingIds = new Set(s.pending().map((e) => e.id));
  for (const id of resolvedCritical) expect(pendingIds.has(id)).toBe(true);

  // Space comes back (someone else's file removed): writes succeed again, the flag clears.
  freeFiller();
  const ok = await s.append(ev(100_000, 'critical'));
  expect(s.stats().diskFull).toBe(false);
  resolvedCritical.push(ok.event.id);
  await s.close();
  const s2 = await reopen();
  const after = new Set(s2.pending().map((e) => e.id));
  for (const id of resolvedCritical) expect(after.has(id), `critical ${id} lost`).toBe(true);
  await s2.close();
  return { criticals: resolvedCritical.length, shed: st.shedBySeverity };
}

let mountDir: string | null = null;
let mountError = '';
beforeAll(() => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'store-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_BYTES}`, 'tmpfs', d], { stdio: 'pipe' });
    mountDir = d;
  } catch (e) {
    mountError = (e as Error).message.split('\n')[0] ?? 'mount failed';
    fs.rmSync(d, { recursive: true, force: true });
  }
});
afterAll(() => {
  if (mountDir) {
    try {
      execFileSync('umount', [mountDir], { stdio: 'pipe' });
    } catch {
      /* busy: leave it */
    }
    fs.rmSync(mountDir, { recursive: true, force: true });
  }
});

describe('event store on a full disk', () => {
  it('real ENOSPC on a small tmpfs: sheds info, then warning, never critical; refuses criticals only when nothing is left', async (ctx) => {
    if (!mountDir) {
      console.warn(`SKIP real-ENOSPC test: cannot mount a tmpfs here (${mountError}); the fs-adapter variant below covers the logic`);
      ctx.skip();
      return;
    }
    const dir = path.join(mountDir, 'state');
    fs.mkdirSync(dir);
    const filler = path.join(mountDir, 'filler');
    fs.writeFileSync(filler, Buffer.alloc(FILLER_BYTES, 1));
    const opts = { dir, reserveBytes: 32 * 1024, maxEvents: 100_000, bootId: 'b' };
    const s = await openEventStore(opts);
    const r = await fillScenario(
      s,
      () => fs.rmSync(filler),
      () => openEventStore(opts),
    );
    console.log(`tmpfs ENOSPC: ${r.criticals} criticals kept, shed ${JSON.stringify(r.shed)}`);
  });

  it('injected ENOSPC through the fs adapter (quota): same guarantees', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'store-quota-'));
    try {
      const qfs = quotaFs(TMPFS_BYTES) as StoreFs & { free(n: number): void; _fill(n: number): void };
      qfs._fill(FILLER_BYTES);
      const opts = { dir, reserveBytes: 32 * 1024, maxEvents: 100_000, bootId: 'b', fs: qfs };
      const s = await openEventStore(opts);
      await fillScenario(
        s,
        () => qfs.free(FILLER_BYTES),
        () => openEventStore(opts),
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
