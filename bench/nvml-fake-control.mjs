// Minimal client for the fake libnvidia-ml's control socket, for benchmarks (plain JS: benches run
// with `node`, without a TypeScript loader). The test-side equivalent is test/helpers/fake-nvml.ts.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
export const FAKE_NVML_LIB = join(REPO_ROOT, 'build', 'fake-nvml', 'libnvidia-ml.so.1');

/** Writes a fake config (n default devices from the library's own defaults) and sets the env. */
export function setupFake({ devices = 8 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'navarch-bench-'));
  const socketPath = join(dir, 'control.sock');
  const configPath = join(dir, 'fake-nvml.json');
  // Devices beyond the explicit count come from the fake's defaults: give `devices` entries of {}.
  writeFileSync(configPath, JSON.stringify({ controlSocket: socketPath, devices: Array.from({ length: devices }, () => ({})) }));
  process.env.NAVARCH_FAKE_NVML_CONFIG = configPath;
  process.env.NAVARCH_NVML_LIBRARY = FAKE_NVML_LIB;
  return { dir, socketPath, configPath, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** One persistent connection; requests are answered in order, one line each. */
export class Control {
  constructor(sock) {
    this.sock = sock;
    this.buf = '';
    this.waiters = [];
    sock.setEncoding('utf8');
    sock.setNoDelay?.(true);
    sock.on('data', (d) => {
      this.buf += d;
      let nl;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiters.shift();
        if (w) w.resolve(JSON.parse(line));
      }
    });
    const failAll = (e) => {
      for (const w of this.waiters.splice(0)) w.reject(e);
    };
    sock.on('error', failAll);
    sock.on('close', () => failAll(new Error('control socket closed')));
  }

  static async connect(socketPath, timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs;
    for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
      try {
        const sock = await new Promise((resolve, reject) => {
          const s = createConnection(socketPath);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        return new Control(sock);
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`fake-nvml control socket ${socketPath}: ${e.message}`);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  request(req, timeoutMs = 120_000) {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no reply to ${req.op} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        resolve: (r) => {
          clearTimeout(t);
          if (r.ok) resolve(r);
          else reject(new Error(`fake-nvml ${req.op}: ${r.error}`));
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
      this.sock.write(`${JSON.stringify(req)}\n`);
    });
  }

  close() {
    this.sock.destroy();
  }
}

/** Percentile of a sorted numeric array (nearest rank). */
export function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function summary(values) {
  const s = Float64Array.from(values).sort();
  const mean = s.reduce((a, b) => a + b, 0) / (s.length || 1);
  return { n: s.length, mean, p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), max: s[s.length - 1] ?? NaN, min: s[0] ?? NaN };
}
