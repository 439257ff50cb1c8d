import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openEventStore } from '../../src/store/event-store.js';
import { compileForChild } from './compile.js';

let jsDir: string;
let dir: string;
beforeAll(() => {
  jsDir = compileForChild(['src/store/event-store.ts']);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'store-crash-'));
}, 180_000);
afterAll(() => {
  fs.rmSync(jsDir, { recursive: true, force: true });
  fs.rmSync(dir, { recursive: true, force: true });
});

interface RoundResult {
  resolved: Map<number, string>;
  acked: Set<number>;
  acking: Set<number>;
  storms: number;
  next: number;
}

function runAndKill(start: number, killAfterMs: number): Promise<RoundResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(import.meta.dirname, 'crash-child.mjs'), jsDir, dir, String(start)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let killTimer: NodeJS.Timeout | null = null;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!killTimer && out.includes('ready\n')) {
        killTimer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const guard = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('exit', (code, signal) => {
      clearTimeout(guard);
      if (killTimer) clearTimeout(killTimer);
      if (signal !== 'SIGKILL') return reject(new Error(`child exited ${code} ${signal}: ${err}`));
      const res: RoundResult = { resolved: new Map(), acked: new Set(), acking: new Set(), storms: 0, next: start };
      const lines = out.split('\n');
      lines.pop(); // possibly incomplete
      let lastAcking: number[] = [];
      for (const l of lines) {
        const [w, a, b] = l.split(' ');
        if (w === 'storm') {
          res.storms++;
        } else if (w === 'ok') {
          res.resolved.set(Number(a), b as string);
          res.next = Math.max(res.next, Number(a) + 1);
        } else if (w === 'shed') {
          // the store may shed only to stay within bounds; this test stays far below them
          if (Number(a) !== 0) return reject(new Error(`child shed ${a} events: test bounds too small`));
        } else if (w === 'acking') {
          lastAcking = a ? a.split(',').map(Number) : [];
          for (const n of lastAcking) res.acking.add(n);
        } else if (w === 'acked') {
          for (const n of lastAcking) {
            res.acked.add(n);
            res.acking.delete(n);
          }
        }
      }
      res.next = Math.ceil((res.next + 100) / 40) * 40; // fresh range for the next round
      resolve(res);
    });
  });
}

describe('event store under kill -9', () => {
  it('every append that resolved is there exactly once after SIGKILL at random moments; acked ones stay gone', async () => {
    const resolved = new Map<number, string>();
    const acked = new Set<number>();
    const uncertain = new Set<number>();
    let next = 0;
    let storms = 0;
    let tornTails = 0;
    let stormInFlight = 0;
    const rounds = 6;
    for (let r = 0; r < rounds; r++) {
      const res = await runAndKill(next, 150 + Math.floor(Math.random() * 600));
      for (const [n, id] of res.resolved) resolved.set(n, id);
      for (const n of res.acked) acked.add(n);
      for (const n of res.acking) uncertain.add(n);
      storms += res.storms;
      stormInFlight += 1; // at most one storm append per batch was in flight at the kill
      next = res.next;
      // reopen in this process: must succeed (stale lock of the killed child taken over), nothing corrupt mid-file
      const s = await openEventStore({ dir, fsync: true, maxBytes: 1024 * 1024, bootId: 'crash-boot' });
      const st = s.stats();
      expect(st.corruptRecords).toBe(0);
      tornTails += st.tornTails;
      const seen = new Map<number, number>();
      const storm = s.pending().filter((e) => e.key === 'storm');
      expect(storm).toHaveLength(1);
      expect(storm[0]!.count).toBeGreaterThanOrEqual(storms);
      expect(storm[0]!.count).toBeLessThanOrEqual(storms + stormInFlight);
      for (const e of s.pending()) {
        if (e.key === 'storm') continue;
        const i = Number(e.metrics.i);
        seen.set(i, (seen.get(i) ?? 0) + 1);
        expect(e.count).toBe(1);
      }
      for (const [i, c] of seen) expect(c, `event ${i} duplicated`).toBe(1);
      for (const [n, id] of resolved) {
        if (acked.has(n)) {
          expect(seen.has(n), `acked event ${n} came back`).toBe(false);
        } else if (!uncertain.has(n)) {
          expect(seen.has(n), `resolved event ${n} lost in round ${r}`).toBe(true);
          expect(s.pending().find((e) => Number(e.metrics.i) === n)?.id).toBe(id);
        }
      }
      await s.close();
    }
    expect(resolved.size).toBeGreaterThan(50);
    console.log(
      `crash test: ${rounds} SIGKILL rounds, ${resolved.size} resolved appends, ${acked.size} acked, ${storms} coalesced storm appends, ${tornTails} torn tails cut, all accounted for`,
    );
  }, 300_000);
});
