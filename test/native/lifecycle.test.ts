// Lifecycle: repeated open/watch/stop/close with flat memory, worker_threads (load, terminate with
// an active watch and with a wedged call in flight), and a process with an active watch that exits
// on its own.
import { spawn } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { defaultDevices, FAKE_NVML_LIB } from '../helpers/fake-nvml.js';
import { loadAddon } from '../../src/nvml/binding.js';
import { openNvml, type Nvml, type NvmlEvent } from '../../src/nvml/index.js';
import { skipReason, sleep, until, useFake, useSession } from './util.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function addonPath(): string {
  const r = loadAddon();
  if (!r.ok) throw new Error(r.reason);
  return r.path;
}

/**
 * Runs `code` (CommonJS) in a child node process; resolves with its exit code and output. It is
 * killed after killAfterMs, or `holdMs` after it printed "watching" when holdMs is given.
 */
function runChild(
  code: string,
  env: Record<string, string>,
  killAfterMs: number,
  holdMs?: number,
): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', code], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let holding = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (holdMs !== undefined && !holding && out.includes('watching')) {
        holding = true;
        setTimeout(() => child.kill('SIGKILL'), holdMs);
      }
    });
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.on('error', reject);
    child.on('exit', (c, s) => {
      clearTimeout(timer);
      resolve({ code: c, signal: s, out });
    });
  });
}

describe.skipIf(skipReason !== null)('NVML addon: lifecycle', () => {
  const ctx = useSession();

  it('1000 open/watch/snapshot/stop/close cycles keep memory flat and init/shutdown balanced', async () => {
    ctx.fake = useFake({ devices: defaultDevices(1) });
    const cycle = async (): Promise<void> => {
      const n = await openNvml({ callTimeoutMs: 10_000 });
      const w = n.watch(() => undefined, { waitTimeoutMs: 5 });
      const snap = await n.snapshot();
      if (!snap[0]!.ok) throw new Error('snapshot failed during cycles');
      await w.stop();
      await n.close();
    };
    for (let i = 0; i < 100; i++) await cycle();
    gc();
    const before = process.memoryUsage().rss;
    // Under ASan each cycle is ~10x slower: fewer cycles, same checks.
    const cycles = process.env.NAVARCH_SANITIZE === '1' ? 150 : 900;
    for (let i = 0; i < cycles; i++) await cycle();
    gc();
    await sleep(50);
    gc();
    const growth = process.memoryUsage().rss - before;
    if (process.env.NAVARCH_SANITIZE === '1') {
      // ASan's quarantine holds freed memory on purpose: the bound only applies to normal builds.
      console.warn(`[lifecycle] RSS growth under ASan: ${(growth / 1048576).toFixed(1)} MB (not asserted)`);
    } else {
      console.log(`[lifecycle] RSS growth over ${cycles} cycles after warm-up: ${(growth / 1048576).toFixed(1)} MB`);
      expect(growth).toBeLessThan(20 * 1024 * 1024);
    }
    // Every session shut NVML down: a fresh open re-reads the config (reference count was 0).
    ctx.fake.update({ devices: defaultDevices(3) });
    ctx.nvml = await openNvml();
    expect(await ctx.nvml.devices()).toHaveLength(3);
    const st = await ctx.fake.stats();
    expect(st.initCount).toBe(1);
    expect(st.eventSets).toBe(0);
  }, 300_000);

  it('a stopped watch and its callback are garbage-collected (no persistent-reference cycle)', async () => {
    ctx.fake = useFake({ devices: defaultDevices(1) });
    ctx.nvml = await openNvml();
    // In a helper whose frame is gone afterwards: a suspended async frame keeps stale registers.
    const makeWatches = async (session: Nvml): Promise<Array<WeakRef<object>>> => {
      const out: Array<WeakRef<object>> = [];
      for (let i = 0; i < 20; i++) {
        const cb = (): void => undefined;
        const w = session.watch(cb, { waitTimeoutMs: 5 });
        out.push(new WeakRef(w), new WeakRef(cb));
        await w.stop();
      }
      return out;
    };
    const refs = await makeWatches(ctx.nvml);
    await until(
      async () => {
        gc();
        await sleep(20);
        return refs.every((r) => r.deref() === undefined);
      },
      'stopped watches collected',
      20_000,
    );
  });

  it('a session dropped by its owner with a call in flight is not collected before it settles', async () => {
    ctx.fake = useFake({ devices: defaultDevices(1) });
    const warm = await openNvml(); // keeps the fake initialised for the injection below
    await ctx.fake.inject({ op: 'hang', device: 0, function: 'nvmlDeviceGetTemperature', ms: 30_000 });
    // Nothing references the session but the pending promise chain; its deadline must still fire.
    const pending = openNvml().then((n) => n.snapshot({ timeoutMs: 1000 }));
    for (let i = 0; i < 10; i++) {
      gc();
      await sleep(50);
    }
    const snap = await pending;
    expect(!snap[0]!.ok && snap[0]!.error.code).toBe('NVML_CALL_TIMEOUT');
    await ctx.fake.recover(0);
    // Once settled and unreferenced, the session is collected and releases its NVML reference.
    await until(async () => {
      gc();
      await sleep(20);
      return (await ctx.fake!.stats()).initCount === 1;
    }, 'the collected session released NVML');
    await warm.close();
  });

  it('a session collected without close() finishes its running watch (callbacks released)', async () => {
    ctx.fake = useFake({ devices: defaultDevices(1) });
    // In a helper whose frame is gone afterwards: nothing keeps the session but the watch's callbacks.
    const abandon = async (): Promise<WeakRef<object>> => {
      const session = await openNvml();
      const cb = (): void => undefined;
      session.watch(cb, { waitTimeoutMs: 5 });
      return new WeakRef(cb);
    };
    const ref = await abandon();
    await until(
      async () => {
        gc();
        await sleep(20);
        return ref.deref() === undefined;
      },
      'the watch of the collected session to release its callback',
      20_000,
    );
  });

  it('two sessions share NVML: closing one leaves the other working', async () => {
    ctx.fake = useFake({ devices: defaultDevices(2) });
    const a = await openNvml();
    ctx.nvml = await openNvml();
    expect((await ctx.fake.stats()).initCount).toBe(2);
    await a.close();
    expect((await ctx.fake.stats()).initCount).toBe(1);
    expect((await ctx.nvml.snapshot()).map((s) => s.ok)).toEqual([true, true]);
  });

  it('loads in a worker thread; terminating it with an active watch and a wedged call is clean', async () => {
    ctx.fake = useFake({ devices: defaultDevices(2) });
    ctx.nvml = await openNvml(); // the main thread's own session keeps NVML initialised
    const events: NvmlEvent[] = [];
    const mainWatch = ctx.nvml.watch((e) => events.push(...e), { waitTimeoutMs: 100 });
    await ctx.fake.inject({ op: 'hang', device: 1, function: 'nvmlDeviceGetTemperature', ms: 3000 });
    const worker = new Worker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const addon = require(workerData.addon);
      setInterval(() => {}, 1000); // stay alive until terminated
      const s = new addon.Session();
      s.open(workerData.lib, 30000).then(async () => {
        const w = s.watch((evs) => parentPort.postMessage({ events: evs.length }), null, 100, 64, false, null);
        const snap = await s.snapshot(300);
        parentPort.postMessage({ opened: true, timedOut: snap[1].ok === false && snap[1].error.code });
        s.snapshot(300); // another call in flight on the suspect lane at termination
      }, (e) => parentPort.postMessage({ error: e.message }));
      `,
      { eval: true, workerData: { addon: addonPath(), lib: FAKE_NVML_LIB } },
    );
    const msgs: Array<Record<string, unknown>> = [];
    worker.on('message', (m: Record<string, unknown>) => msgs.push(m));
    await until(() => msgs.some((m) => m.opened || m.error), 'worker opened NVML');
    expect(msgs.find((m) => m.opened || m.error)).toEqual({ opened: true, timedOut: 'NVML_CALL_TIMEOUT' });
    expect((await ctx.fake.stats()).initCount).toBe(2);
    await ctx.fake.xid(0, 94);
    await until(() => msgs.some((m) => m.events), 'worker received the event');
    await until(() => events.length > 0, 'main received the event');
    expect(await worker.terminate()).toBe(1);
    // The worker's watcher thread is joined and its event set freed; its init reference goes once
    // the wedged call returns (the fake releases it after 3 s).
    await until(async () => (await ctx.fake!.stats()).eventSets === 1, 'worker event set freed');
    await until(async () => (await ctx.fake!.stats()).initCount === 1, 'worker NVML reference released', 20_000);
    // The process is intact and the main session still works.
    await ctx.fake.xid(0, 95);
    await until(() => events.some((e) => e.data === 95), 'main still receives events');
    await mainWatch.stop();
  });

  it('a process with an active (unref) watch exits by itself; ref: true / ref() keeps it alive, unref() releases it', async () => {
    ctx.fake = useFake({ devices: defaultDevices(2) });
    const script = (ref: boolean, then = ''): string => `
      const addon = require(${JSON.stringify(addonPath())});
      const s = new addon.Session();
      s.open(process.env.NAVARCH_NVML_LIBRARY, 30000).then(async () => {
        await s.snapshot();
        const w = s.watch(() => {}, null, 200, 64, ${ref}, null);
        ${then}
        console.log('watching');
      });
    `;
    const free = await runChild(script(false), ctx.fake.env(), 30_000);
    expect(free.out).toContain('watching');
    expect(free.signal).toBeNull();
    expect(free.code).toBe(0);
    const unrefd = await runChild(script(true, 'w.unref();'), ctx.fake.env(), 30_000);
    expect(unrefd).toMatchObject({ code: 0, signal: null });
    const held = await runChild(script(true), ctx.fake.env(), 60_000, 1500);
    expect(held.out).toContain('watching');
    expect(held.signal).toBe('SIGKILL');
    const refd = await runChild(script(false, 'w.ref();'), ctx.fake.env(), 60_000, 1500);
    expect(refd.out).toContain('watching');
    expect(refd.signal).toBe('SIGKILL');
  });

  it('a process that loads the addon but never opens NVML exits normally', async () => {
    const r = await runChild(`require(${JSON.stringify(addonPath())}); console.log('loaded')`, {}, 30_000);
    expect(r).toMatchObject({ code: 0, out: 'loaded\n' });
  });
});
