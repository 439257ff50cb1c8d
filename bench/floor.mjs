#!/usr/bin/env node
/**
 * The machine's floor for "a fault reaches the control plane": what the two unavoidable steps
 * cost on this machine, with nothing of the agent in them.
 *
 *   node bench/floor.mjs [--samples 2000] [--dir DIR] [--json]
 *
 * - disk: a 256-byte append to a file plus fdatasync (what keeping an event durable costs at
 *   least), in DIR (default: the OS temp dir, where the latency benchmarks keep their state);
 * - http: one keep-alive HTTP/1.1 POST of 256 bytes on loopback to a server in another Node
 *   process, answered with a small body (what one ReportHealth costs at least).
 *
 * Both are measured interleaved (one disk sample, one http sample, ...) so that a noisy moment of
 * the machine lands in both. The floor is the two added: p50 = disk p50 + http p50, and the same
 * for p99. Imported by controlplane-xid.mjs, which measures it in the same run as the agent and
 * prints the ratios.
 */
import { fork } from 'node:child_process';
import { closeSync, fdatasyncSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const CHILD_FLAG = '--floor-server-child';

/** The server half: a plain node:http server in its own process, answering every POST. */
function serve() {
  const reply = Buffer.from('{}');
  const srv = http.createServer((req, res) => {
    req.on('data', () => {});
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': reply.length });
      res.end(reply);
    });
  });
  srv.keepAliveTimeout = 60_000;
  srv.listen(0, '127.0.0.1', () => process.send({ port: srv.address().port }));
  process.on('disconnect', () => process.exit(0));
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const summary = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return { p50Ms: +pct(s, 50).toFixed(3), p99Ms: +pct(s, 99).toFixed(3), maxMs: +s[s.length - 1].toFixed(3) };
};

/**
 * A floor probe: open() starts the server child and the file; sample() takes one disk and one
 * http sample; result() summarises; close() cleans up. controlplane-xid.mjs takes one sample in
 * each gap between its injections, so the floor and the agent see the same moments of the machine.
 */
export async function openFloorProbe({ dir } = {}) {
  const own = dir === undefined;
  const d = own ? mkdtempSync(join(os.tmpdir(), 'floor-')) : dir;
  const file = join(d, 'floor.log');
  const fd = openSync(file, 'a');
  const line = Buffer.alloc(256, 0x61);
  line[255] = 0x0a;
  const child = fork(fileURLToPath(import.meta.url), [CHILD_FLAG], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const cleanup = () => {
    child.kill();
    closeSync(fd);
    if (own) rmSync(d, { recursive: true, force: true });
    else rmSync(file, { force: true });
  };
  let port;
  try {
    port = await new Promise((resolve, reject) => {
      child.once('message', (m) => resolve(m.port));
      child.once('exit', (c) => reject(new Error(`floor: server child exited with ${c}`)));
    });
  } catch (e) {
    cleanup();
    throw e;
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const body = Buffer.alloc(256, 0x62);
  const post = () =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port, path: '/floor', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (res) => {
          res.on('data', () => {});
          res.on('end', resolve);
        },
      );
      req.setTimeout(10_000, () => req.destroy(new Error('floor: POST timed out')));
      req.on('error', reject);
      req.end(body);
    });
  const disk = [];
  const net = [];
  return {
    async sample() {
      let t = process.hrtime.bigint();
      writeSync(fd, line);
      fdatasyncSync(fd);
      disk.push(Number(process.hrtime.bigint() - t) / 1e6);
      t = process.hrtime.bigint();
      await post();
      net.push(Number(process.hrtime.bigint() - t) / 1e6);
    },
    /** Drops what was sampled so far (after a warm-up). */
    reset() {
      disk.length = 0;
      net.length = 0;
    },
    result() {
      if (disk.length === 0) throw new Error('floor: no samples');
      const ds = summary(disk);
      const ns = summary(net);
      return { samples: disk.length, disk: ds, http: ns, floor: { p50Ms: +(ds.p50Ms + ns.p50Ms).toFixed(3), p99Ms: +(ds.p99Ms + ns.p99Ms).toFixed(3) } };
    },
    close() {
      agent.destroy();
      cleanup();
    },
  };
}

/** Measures the floor alone: `samples` of each kind after 100 warm-up rounds. */
export async function measureFloor({ samples = 2000, dir } = {}) {
  if (!Number.isInteger(samples) || samples < 10 || samples > 1_000_000) throw new Error(`floor: samples must be 10..1000000, got ${samples}`);
  const probe = await openFloorProbe({ dir });
  try {
    for (let i = 0; i < 100; i++) await probe.sample();
    probe.reset();
    for (let i = 0; i < samples; i++) await probe.sample();
    return probe.result();
  } finally {
    probe.close();
  }
}

/** p50/p99 of a latency list against the floor, as "x.xx×" ratios. */
export function ratios(agent, floor) {
  return { p50: +(agent.p50Ms / floor.floor.p50Ms).toFixed(2), p99: +(agent.p99Ms / floor.floor.p99Ms).toFixed(2) };
}

export function formatFloor(f) {
  return (
    `floor: fdatasync(256 B) p50=${f.disk.p50Ms} p99=${f.disk.p99Ms} max=${f.disk.maxMs} ms; ` +
    `keep-alive POST p50=${f.http.p50Ms} p99=${f.http.p99Ms} max=${f.http.maxMs} ms; ` +
    `floor p50=${f.floor.p50Ms} p99=${f.floor.p99Ms} ms (${f.samples} samples each)`
  );
}

if (process.argv.includes(CHILD_FLAG)) {
  serve();
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values: a } = parseArgs({
    options: { samples: { type: 'string', default: '2000' }, dir: { type: 'string' }, json: { type: 'boolean', default: false } },
  });
  const f = await measureFloor({ samples: Number(a.samples), dir: a.dir });
  const out = { bench: 'floor', ...f, loadavg1: +os.loadavg()[0].toFixed(2) };
  console.log(a.json ? JSON.stringify(out) : `${formatFloor(f)} load=${out.loadavg1}`);
}
