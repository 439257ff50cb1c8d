/** Spawns test/fake-nvml/probe.py (ctypes driver of the fake library) and talks to it line by line. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { FAKE_NVML_LIB, type FakeNvml } from '../helpers/fake-nvml.js';

const PROBE = fileURLToPath(new URL('./probe.py', import.meta.url));

export type Reply = Record<string, any>;

export class Probe {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly pending: Array<(line: string) => void> = [];
  private readonly lines: string[] = [];
  stderr = '';
  private exited = false;

  private constructor(env: Record<string, string>) {
    this.child = spawn('python3', [PROBE, FAKE_NVML_LIB], { env: { ...process.env, ...env }, stdio: 'pipe' });
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d: string) => {
      this.stderr += d;
    });
    this.child.on('exit', () => {
      this.exited = true;
      for (const p of this.pending.splice(0)) p('{"error":"probe exited"}');
    });
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      const p = this.pending.shift();
      if (p) p(line);
      else this.lines.push(line);
    });
  }

  static async start(fake: FakeNvml): Promise<Probe> {
    const p = new Probe(fake.env());
    const hello = await p.next();
    if (!hello.ready) throw new Error(`probe did not start: ${JSON.stringify(hello)} ${p.stderr}`);
    return p;
  }

  private next(): Promise<Reply> {
    const queued = this.lines.shift();
    if (queued !== undefined) return Promise.resolve(JSON.parse(queued) as Reply);
    if (this.exited) return Promise.reject(new Error(`probe exited: ${this.stderr}`));
    return new Promise((resolve) => this.pending.push((l) => resolve(JSON.parse(l) as Reply)));
  }

  /** Sends one command; rejects if the probe reports a Python exception. */
  async call(cmd: Reply): Promise<Reply> {
    this.child.stdin.write(`${JSON.stringify(cmd)}\n`);
    const r = await this.next();
    if (typeof r.error === 'string') throw new Error(`probe ${cmd.call}: ${r.error} ${this.stderr}`);
    return r;
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.stdin.end();
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(t);
  }
}
