// The addon's kernel-log reader thread (native/kmsg_reader.cc) over the real /dev/kmsg: records in
// order, one per read; the bounded queue drops and counts when this side never takes; stop joins;
// a worker thread terminated with a reader running; a process that exits with one running.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { loadAddon, type NativeKmsgReader, type NativeKmsgReaderCtor } from '../../src/nvml/binding.js';
import { until } from './util.js';

const load = loadAddon();
const kmsgRw = ((): boolean => {
  try {
    fs.accessSync('/dev/kmsg', fs.constants.R_OK | fs.constants.W_OK);
    return fs.statSync('/dev/kmsg').isCharacterDevice();
  } catch {
    return false;
  }
})();
const reason = !load.ok
  ? `the addon does not load (${load.reason})`
  : !kmsgRw
    ? '/dev/kmsg is not a readable and writable character device here (needs root)'
    : null;
if (reason) console.warn(`SKIP native kmsg reader tests: ${reason}`);

function open(limits?: { maxRecords?: number; maxBytes?: number }): { reader: NativeKmsgReader; wakes: () => number } {
  if (!load.ok || !load.addon.KmsgReader) throw new Error('no addon');
  const Ctor: NativeKmsgReaderCtor = load.addon.KmsgReader;
  const fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  let wakes = 0;
  try {
    return { reader: new Ctor(fd, () => void wakes++, limits), wakes: () => wakes };
  } finally {
    fs.closeSync(fd); // the thread reads its own duplicate
  }
}

/** Writes lines to /dev/kmsg, reopening every 10 (printk_devkmsg=ratelimit allows a burst of 10 per open). */
function writeLines(lines: string[]): void {
  for (let i = 0; i < lines.length; i += 10) {
    const w = fs.openSync('/dev/kmsg', 'w');
    try {
      for (const l of lines.slice(i, i + 10)) fs.writeSync(w, `${l}\n`);
    } finally {
      fs.closeSync(w);
    }
  }
}

function takeAll(r: NativeKmsgReader): string[] {
  const out: string[] = [];
  for (;;) {
    const { records } = r.take(4096);
    out.push(...records);
    if (records.length < 4096) return out;
  }
}

describe.skipIf(reason !== null)('native kmsg reader thread', () => {
  it('reads the backlog, then new records in order, one per read, and tells this side when they arrive', async () => {
    const { reader, wakes } = open();
    try {
      await until(() => reader.take(1 << 20).idle || false, 'the backlog read');
      takeAll(reader);
      const w0 = wakes();
      const tag = randomBytes(6).toString('hex');
      writeLines(Array.from({ length: 30 }, (_, i) => `<6>${tag} ${i}`));
      const mine: string[] = [];
      await until(() => {
        mine.push(...reader.take(4096).records.filter((r) => r.includes(tag)));
        return mine.length === 30;
      }, 'the 30 records');
      expect(wakes()).toBeGreaterThan(w0);
      const seqs = mine.map((r) => BigInt(r.split(',')[1]!));
      expect(seqs.every((s, i) => i === 0 || s > seqs[i - 1]!)).toBe(true);
      expect(mine.map((r) => r.slice(r.indexOf(';') + 1).trim())).toEqual(Array.from({ length: 30 }, (_, i) => `${tag} ${i}`));
      expect(reader.stats()).toMatchObject({ overruns: 0, dropped: 0, readErrors: 0 });
    } finally {
      reader.stop();
    }
  });

  it('holds at most maxRecords for this side and counts the rest as dropped', async () => {
    const { reader } = open({ maxRecords: 5 });
    try {
      const tag = randomBytes(6).toString('hex');
      writeLines(Array.from({ length: 20 }, (_, i) => `<6>${tag} ${i}`));
      await until(() => {
        const s = reader.stats();
        return s.records > 0 && s.records === s.queued + s.dropped && s.dropped >= 20;
      }, 'the thread to read everything it can');
      const s = reader.stats();
      expect(s.queued).toBe(5);
      expect(s.maxQueued).toBe(5);
      expect(s.dropped).toBe(s.records - 5);
      expect(reader.take(100).records).toHaveLength(5);
    } finally {
      reader.stop();
    }
  });

  it('stop joins the thread and is idempotent; a stopped reader reads nothing more', async () => {
    const { reader } = open();
    await until(() => reader.stats().records > 0, 'the backlog read');
    reader.stop();
    reader.stop();
    const before = reader.stats().records;
    writeLines([`<6>${randomBytes(6).toString('hex')} after stop`]);
    await new Promise((r) => setTimeout(r, 100));
    expect(reader.stats().records).toBe(before);
  });

  it('rejects bad arguments with a TypeError or RangeError', () => {
    if (!load.ok || !load.addon.KmsgReader) throw new Error('no addon');
    const Ctor = load.addon.KmsgReader;
    expect(() => new (Ctor as unknown as new (...a: unknown[]) => unknown)('x', () => {})).toThrow(TypeError);
    expect(() => new Ctor(-1, () => {})).toThrow(TypeError);
    expect(() => new Ctor(0, () => {}, { maxRecords: 0 })).toThrow(RangeError);
    const { reader } = open();
    try {
      expect(() => reader.take(0)).toThrow(RangeError);
    } finally {
      reader.stop();
    }
  });

  it('a worker thread terminated with a reader running ends cleanly (the env cleanup hook joins it)', async () => {
    if (!load.ok) throw new Error('no addon');
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const fs = require('node:fs');
       const a = require(workerData.addon);
       const fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
       const r = new a.KmsgReader(fd, () => {});
       fs.closeSync(fd);
       setTimeout(() => parentPort.postMessage(r.stats().records), 100);
       setInterval(() => {}, 1000);`,
      { eval: true, workerData: { addon: load.path } },
    );
    const records = await new Promise((r) => worker.once('message', r));
    expect(records).toBeGreaterThanOrEqual(0);
    expect(await worker.terminate()).toBe(1);
  });

  it('a process that exits with a reader running exits at once (the thread keeps nothing alive)', async () => {
    if (!load.ok) throw new Error('no addon');
    const code = `const fs = require('node:fs'); const a = require(${JSON.stringify(load.path)});
      const fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      globalThis.r = new a.KmsgReader(fd, () => {}); fs.closeSync(fd); console.log('reading');`;
    const res = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.on('exit', (c) => {
        clearTimeout(t);
        resolve({ code: c, out });
      });
    });
    expect(res).toEqual({ code: 0, out: 'reading\n' });
  });
});
