// Shared helpers for the deploy tests: polling, a notification-socket receiver, tool probes.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { poll } from '../helpers/wait.js';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

/** Polls `cond` until it is truthy or `timeoutMs` passes (then throws with `what`). */
export function waitFor<T>(cond: () => T | undefined | null | false, what: string, timeoutMs = 20_000): Promise<T> {
  return poll(what, cond, { timeoutMs, everyMs: 20 }) as Promise<T>;
}

/** True when `cmd` runs (exit 0) with `args`. */
export function have(cmd: string, args: string[] = ['--version']): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 30_000 });
  return r.status === 0;
}

export interface NotifyMessage {
  state: string;
  pid: number | null;
}

/** A python3 AF_UNIX datagram receiver (Node cannot bind unix datagram sockets). */
export class NotifyReceiver {
  readonly messages: NotifyMessage[] = [];
  private child: ChildProcess;
  private ready = false;
  private stderr = '';

  constructor(readonly address: string) {
    const script = fileURLToPath(new URL('./notify-receiver.py', import.meta.url));
    this.child = spawn('python3', [script, address], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = JSON.parse(line) as { ready?: boolean } & NotifyMessage;
        if (m.ready) this.ready = true;
        else this.messages.push({ state: m.state, pid: m.pid });
      }
    });
    this.child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.stderr += c));
  }

  async started(): Promise<void> {
    await waitFor(() => this.ready || this.child.exitCode !== null, `receiver on ${this.address}`);
    if (!this.ready) throw new Error(`notify receiver failed: ${this.stderr}`);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }
}

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (bounded), capturing output. */
export function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number } = {}): RunResult {
  const r = spawnSync(cmd, args, {
    env: opts.env ?? process.env,
    cwd: opts.cwd ?? repoRoot,
    input: opts.input,
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 120_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Async variant (so an in-process HTTP server keeps serving while the child runs). */
export function runAsync(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd ?? repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/**
 * A PATH for a host without Node.js: `dir` gets a link to every tool of /usr/local/bin, /usr/bin
 * and /bin except node, nodejs, npm, npx, corepack (and their -NN namespaced forms).
 */
export function pathWithoutNode(dir: string): string {
  mkdirSync(dir, { recursive: true });
  for (const from of ['/usr/local/bin', '/usr/bin', '/bin']) {
    if (!existsSync(from)) continue;
    for (const f of readdirSync(from)) {
      if (/^(node|nodejs|npm|npx|corepack)(-\d+)?$/.test(f) || existsSync(join(dir, f))) continue;
      symlinkSync(join(from, f), join(dir, f));
    }
  }
  return dir;
}

/** Writes an executable that appends "<name> <args>" lines to `log` and exits with `rc`. */
export function makeRecorder(path: string, log: string, name: string, rc = 0): string {
  writeFileSync(path, `#!/bin/sh\necho "${name} $*" >> '${log}'\nexit ${rc}\n`, { mode: 0o755 });
  return path;
}

export const IMDS_IDENTITY: Record<string, string> = {
  '/latest/meta-data/instance-id': 'i-0abc123def4567890',
  '/latest/meta-data/placement/region': 'us-west-2',
  '/latest/meta-data/placement/availability-zone': 'us-west-2b',
  '/latest/meta-data/instance-type': 'p5.48xlarge',
};

/** A minimal IMDSv2: PUT token (TTL header required), GETs only with a live token. */
export class FakeImds {
  readonly log: Array<{ method: string; path: string; status: number }> = [];
  readonly tokens = new Set<string>();
  failTokenPuts = 0;
  /** After this many successful GETs, every token expires once (a 401 follows). */
  expireAfterGets = Infinity;
  gets = 0;
  private server: Server;
  port = 0;

  constructor() {
    this.server = createServer((req, res) => this.handle(req, res));
  }
  async start(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }
  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  private reply(req: IncomingMessage, res: ServerResponse, status: number, body = ''): void {
    this.log.push({ method: req.method ?? '', path: req.url ?? '', status });
    res.writeHead(status, { 'content-type': 'text/plain' }).end(body);
  }
  private handle(req: IncomingMessage, res: ServerResponse): void {
    if (req.url === '/latest/api/token') {
      if (req.method !== 'PUT') return this.reply(req, res, 405);
      const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21600) return this.reply(req, res, 400);
      if (this.failTokenPuts > 0) {
        this.failTokenPuts--;
        return this.reply(req, res, 503);
      }
      const token = randomBytes(16).toString('base64url');
      this.tokens.add(token);
      return this.reply(req, res, 200, token);
    }
    if (req.method !== 'GET') return this.reply(req, res, 405);
    const tok = req.headers['x-aws-ec2-metadata-token'];
    if (typeof tok !== 'string' || !this.tokens.has(tok)) return this.reply(req, res, 401);
    const value = IMDS_IDENTITY[req.url ?? ''];
    if (value === undefined) return this.reply(req, res, 404);
    if (++this.gets === this.expireAfterGets) this.tokens.clear();
    return this.reply(req, res, 200, value);
  }
}
