/**
 * Node facts for registration and heartbeats: hostname, internal IPv4, kernel version, CPU and
 * memory utilisation. /proc is read below a configurable root so tests can feed their own files.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface NodeFacts {
  hostname: string;
  /** First non-internal IPv4 address, "" when there is none. */
  internalIp: string;
  /** Only known when configured (no metadata-service lookups here); "" otherwise. */
  externalIp: string;
  kernelVersion: string;
}

type Interfaces = ReturnType<typeof os.networkInterfaces>;

/** First non-internal IPv4 address in interface order, "" when there is none. */
export function internalIPv4(ifaces: Interfaces = os.networkInterfaces()): string {
  for (const name of Object.keys(ifaces)) {
    for (const a of ifaces[name] ?? []) {
      // Node 18.0-18.3 reported family as a number; accept both.
      const fam = a.family as unknown;
      if ((fam === 'IPv4' || fam === 4) && !a.internal) return a.address;
    }
  }
  return '';
}

export function nodeFacts(opts: { externalIp?: string; hostname?: string } = {}): NodeFacts {
  return {
    hostname: opts.hostname ?? os.hostname(),
    internalIp: internalIPv4(),
    externalIp: opts.externalIp ?? '',
    kernelVersion: os.release(),
  };
}

interface CpuTimes {
  busy: number;
  total: number;
}

/** Parse the aggregate "cpu" line of /proc/stat. Throws a one-line error when it is missing. */
export function parseProcStat(text: string): CpuTimes {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) throw new Error('/proc/stat: no aggregate "cpu" line');
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal [guest guest_nice] (guest is already in user).
  const v = (i: number): number => (Number.isFinite(f[i]) ? (f[i] as number) : 0);
  const idle = v(3) + v(4);
  const total = v(0) + v(1) + v(2) + v(3) + v(4) + v(5) + v(6) + v(7);
  return { busy: total - idle, total };
}

/**
 * CPU utilisation from /proc/stat deltas. The first call takes a short baseline (default 250 ms)
 * so it never reports a meaningless 0; later calls measure since the previous call.
 */
export class CpuUsage {
  private prev: CpuTimes | null = null;
  constructor(
    private readonly procRoot = '/proc',
    private readonly baselineMs = 250,
    /** How the baseline waits (tests substitute their own). */
    private readonly wait: (ms: number) => Promise<unknown> = (ms) => sleep(ms),
  ) {}

  private async read(): Promise<CpuTimes> {
    return parseProcStat(await readFile(path.join(this.procRoot, 'stat'), 'utf8'));
  }

  /** Percent 0..100 over the interval since the previous call (or the initial baseline). */
  async percent(): Promise<number> {
    if (this.prev === null) {
      this.prev = await this.read();
      await this.wait(this.baselineMs);
    }
    const cur = await this.read();
    const prev = this.prev;
    this.prev = cur;
    const dt = cur.total - prev.total;
    if (dt <= 0) return 0;
    return Math.min(100, Math.max(0, ((cur.busy - prev.busy) / dt) * 100));
  }
}

/** Memory in use, percent: (MemTotal - MemAvailable) / MemTotal from /proc/meminfo. */
export function parseMeminfo(text: string): number {
  const get = (k: string): number | null => {
    const m = new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(text);
    return m ? Number(m[1]) : null;
  };
  const total = get('MemTotal');
  const avail = get('MemAvailable') ?? get('MemFree');
  if (!total || avail === null) throw new Error('/proc/meminfo: MemTotal or MemAvailable missing');
  return Math.min(100, Math.max(0, ((total - avail) / total) * 100));
}

export async function memoryUsagePercent(procRoot = '/proc'): Promise<number> {
  return parseMeminfo(await readFile(path.join(procRoot, 'meminfo'), 'utf8'));
}
