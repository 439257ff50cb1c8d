/**
 * `navarch-agent demo` (what `npm start` runs): the development control plane and an agent on
 * the fake backend in one process, with a short scripted fault scenario, printing what the
 * control plane sees. It ends DEMO_END_S seconds in (or after --duration) with a summary; Ctrl-C,
 * SIGTERM and SIGHUP end it early, also with the summary. State lives in a temp directory that is
 * removed on every way out. No GPU needed.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../agent/agent.js';
import type { FakeFault } from '../backends/types.js';
import { resolveConfig } from '../config/config.js';
import { startDevControlPlane, type ReceivedEvent } from '../devcp/dev-server.js';
import { createLogger, flushLogs } from '../log.js';
import { packageVersion, type CliIo } from './io.js';

export interface DemoOptions {
  durationMs: number | null;
  logLevel: string;
  json: boolean;
  io: CliIo;
}

/** The scripted scenario: [seconds after start, fault, what it shows]. */
export const DEMO_SCRIPT: Array<[number, FakeFault, string]> = [
  [5, { kind: 'xid', gpu: 3, xid: 79, message: 'GPU has fallen off the bus.' }, 'XID 79 (fallen off the bus) on GPU 3: fatal, the node turns UNHEALTHY'],
  [8, { kind: 'temperature', gpu: 1, celsius: 96 }, 'thermal excursion on GPU 1 (96 C)'],
  [14, { kind: 'recover', gpu: 1 }, 'GPU 1 cools down (the thermal fault clears)'],
];

/** Default end: 6 s after the last scripted step, time for the recovery to reach the control plane. */
export const DEMO_END_S = 20;

const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export async function runDemo(opts: DemoOptions): Promise<number> {
  const { io } = opts;
  const say = (s: string): void => {
    if (!opts.json) io.stdout(`${s}\n`);
  };
  const stateDir = await mkdtemp(join(tmpdir(), 'navarch-demo-'));
  const cp = await startDevControlPlane({ healthCheckIntervalSeconds: 5, heartbeatIntervalSeconds: 3 });
  const log = createLogger({ level: opts.logLevel });
  const cfg = resolveConfig({
    flags: new Map<string, string | boolean>([
      ['server', cp.url],
      ['node-id', 'demo-node-1'],
      ['pool', 'demo'],
      ['instance-type', 'p5.48xlarge'],
      ['gpu-backend', 'fake'],
      ['state-dir', stateDir],
      ['listen', '127.0.0.1:0'],
      ['kmsg-path', 'none'],
      ['telemetry-interval', '1s'],
      ['command-poll-interval', '2s'],
      ['shutdown-timeout', '3s'],
    ]),
    env: {},
  });
  let agent: Agent | null = null;
  const timers: NodeJS.Timeout[] = [];
  const received = new Map<string, number>();
  // A signal before the scenario runs (while the agent starts) is kept and ends it at once.
  let early: string | null = null;
  let stop = (why: string): void => void (early ??= why);
  const onSignal = (sig: NodeJS.Signals): void => stop(sig);
  for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  const offEvent = cp.onEvent((ev: ReceivedEvent) => {
    received.set(ev.eventType, (received.get(ev.eventType) ?? 0) + 1);
    if (opts.json) io.stdout(`${JSON.stringify({ kind: 'event', ...ev, receivedAtNs: undefined })}\n`);
    else say(`  control plane <- ${ev.eventType} GPU ${ev.gpuIndex} ${JSON.stringify(ev.metrics)}: rule ${ev.rule} -> ${ev.verdict}`);
  });
  try {
    say(`dev control plane: ${cp.url}`);
    agent = await Agent.start({ config: cfg, log, version: packageVersion(), env: { NAVARCH_GPU_COUNT: '8' } });
    say(`agent: node demo-node-1, 8 fake H100 GPUs, local API ${agent.apiUrl} (try: curl ${agent.apiUrl}/status)`);
    say(`state dir: ${stateDir}`);
    say('scenario:');
    for (const [at, , what] of DEMO_SCRIPT) say(`  t+${at}s  ${what}`);
    const endMs = opts.durationMs ?? DEMO_END_S * 1000;
    say(`the demo ends at t+${Math.round(endMs / 1000)}s with a summary (--duration sets the end); Ctrl-C stops it earlier`);
    const started = Date.now();
    const a = agent;
    for (const [at, fault, what] of DEMO_SCRIPT) {
      timers.push(
        setTimeout(() => {
          say(`t+${Math.round((Date.now() - started) / 1000)}s inject: ${what}`);
          Promise.resolve(a.inject?.(fault)).catch((err: unknown) => say(`inject failed: ${(err as Error).message}`));
        }, at * 1000),
      );
    }
    let lastLine = '';
    const view = setInterval(() => {
      const n = cp.node('demo-node-1');
      const s = a.status();
      const line = n
        ? `node ${n.nodeId}: status ${n.status.toUpperCase()}, health ${n.healthStatus.toUpperCase()}, ${n.gpus.length} GPUs, heartbeats ${n.heartbeats}, reports ${n.reports}; agent: ${s.activeFaults.length} active fault(s), ${s.events.pending} pending`
        : 'node not registered yet';
      if (opts.json)
        io.stdout(
          `${JSON.stringify({ kind: 'view', stateDir, node: n ?? null, activeFaults: s.activeFaults }, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`,
        );
      else if (line !== lastLine) say(`[t+${Math.round((Date.now() - started) / 1000)}s] ${line}`);
      lastLine = line;
    }, 1000);
    timers.push(view);
    const why = await new Promise<string>((resolve) => {
      if (early !== null) return resolve(early);
      stop = resolve;
      timers.push(setTimeout(() => resolve('end of the demo'), endMs));
    });
    clearInterval(view);
    const n = cp.node('demo-node-1');
    const s = a.status();
    const summary = {
      kind: 'summary',
      stoppedBy: why,
      seconds: Math.round((Date.now() - started) / 1000),
      node: n ? { status: n.status, health: n.healthStatus, gpus: n.gpus.length, heartbeats: n.heartbeats, reports: n.reports } : null,
      eventsReceived: Object.fromEntries(received),
      activeFaults: s.activeFaults.map((f) => f.key),
      stateDir,
    };
    if (opts.json) io.stdout(`${JSON.stringify(summary)}\n`);
    else {
      say(`summary (${why}, t+${summary.seconds}s):`);
      say(
        n
          ? `  control plane: node ${n.nodeId} ${n.status.toUpperCase()}, health ${n.healthStatus.toUpperCase()}, ${n.heartbeats} heartbeats, ${n.reports} reports`
          : '  control plane: node never registered',
      );
      say(`  events received: ${received.size ? [...received].map(([k, v]) => `${k} x${v}`).join(', ') : 'none'}`);
      say(`  agent: ${summary.activeFaults.length ? `active faults ${summary.activeFaults.join(', ')}` : 'no active faults'}`);
      say(`  removing the state dir ${stateDir}`);
    }
    return 0;
  } catch (err) {
    io.stderr(`navarch-agent: demo: ${(err as Error).message}\n`);
    return 1;
  } finally {
    for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
    for (const t of timers) clearTimeout(t);
    offEvent();
    await agent?.stop('demo finished').catch(() => undefined);
    await cp.close().catch(() => undefined);
    await rm(stateDir, { recursive: true, force: true }).catch(() => undefined);
    flushLogs();
  }
}
