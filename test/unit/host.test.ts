/**
 * Host facts: internal IP selection, /proc/stat CPU deltas (first sample not 0), /proc/meminfo,
 * and the instance type table.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CpuUsage, internalIPv4, memoryUsagePercent, nodeFacts, parseMeminfo, parseProcStat } from '../../src/host/facts.js';
import { instanceTypeGpus, INSTANCE_TYPE_GPUS } from '../../src/host/instance-types.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('internalIPv4', () => {
  const iface = (address: string, family: 'IPv4' | 'IPv6', internal: boolean) =>
    ({ address, family, internal, netmask: '', mac: '00:00:00:00:00:00', cidr: null }) as os.NetworkInterfaceInfo;
  it('returns the first non-internal IPv4 address', () => {
    expect(
      internalIPv4({
        lo: [iface('127.0.0.1', 'IPv4', true)],
        eth0: [iface('fe80::1', 'IPv6', false), iface('10.0.3.7', 'IPv4', false)],
        eth1: [iface('192.168.1.2', 'IPv4', false)],
      }),
    ).toBe('10.0.3.7');
  });
  it('returns "" when there is none', () => {
    expect(internalIPv4({ lo: [iface('127.0.0.1', 'IPv4', true)] })).toBe('');
  });
  it('nodeFacts: hostname, kernel, external IP only when given', () => {
    const f = nodeFacts();
    expect(f.hostname).toBe(os.hostname());
    expect(f.kernelVersion).toBe(os.release());
    expect(f.externalIp).toBe('');
    expect(nodeFacts({ externalIp: '203.0.113.5' }).externalIp).toBe('203.0.113.5');
  });
});

describe('CPU usage from /proc/stat', () => {
  it('parses the aggregate line (iowait counts as idle)', () => {
    expect(parseProcStat('cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n')).toEqual({ busy: 150, total: 1000 });
    expect(() => parseProcStat('intr 1 2 3\n')).toThrow('/proc/stat: no aggregate "cpu" line');
  });

  it('the first sample uses a short baseline, not 0; later samples are deltas', async () => {
    const dir = mkdtempSync(join(os.tmpdir(), 'navarch-proc-'));
    dirs.push(dir);
    const stat = join(dir, 'stat');
    writeFileSync(stat, 'cpu  100 0 100 800 0 0 0 0 0 0\n');
    const waits: number[] = [];
    // The counters move while the baseline is being taken.
    const cpu = new CpuUsage(dir, 50, async (ms) => {
      waits.push(ms);
      writeFileSync(stat, 'cpu  175 0 100 825 0 0 0 0 0 0\n');
    });
    expect(await cpu.percent()).toBe(75);
    expect(waits).toEqual([50]);
    writeFileSync(stat, 'cpu  175 0 100 925 0 0 0 0 0 0\n');
    expect(await cpu.percent()).toBe(0);
  });

  it('reads the real /proc/stat when present', async (ctx) => {
    if (process.platform !== 'linux') {
      console.warn('[skip] real /proc/stat: not Linux');
      ctx.skip();
    }
    const v = await new CpuUsage('/proc', 100).percent();
    expect(v).toBeGreaterThanOrEqual(0);
    expect(v).toBeLessThanOrEqual(100);
  });
});

describe('memory usage from /proc/meminfo', () => {
  it('(MemTotal - MemAvailable) / MemTotal', async () => {
    expect(parseMeminfo('MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n')).toBe(75);
    expect(() => parseMeminfo('Foo: 1 kB\n')).toThrow('/proc/meminfo: MemTotal or MemAvailable missing');
    const dir = mkdtempSync(join(os.tmpdir(), 'navarch-proc-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'meminfo'), 'MemTotal: 2000 kB\nMemAvailable: 500 kB\n');
    expect(await memoryUsagePercent(dir)).toBe(75);
  });
});

describe('instance type table', () => {
  it('knows the GPU instance types', () => {
    expect(instanceTypeGpus('p5.48xlarge')).toEqual({ gpus: 8, model: 'NVIDIA H100' });
    expect(instanceTypeGpus('p5e.48xlarge')?.model).toBe('NVIDIA H200');
    expect(instanceTypeGpus('p5en.48xlarge')?.gpus).toBe(8);
    expect(instanceTypeGpus('P4D.24XLARGE')).toEqual({ gpus: 8, model: 'NVIDIA A100' });
    expect(instanceTypeGpus('p3.2xlarge')?.gpus).toBe(1);
    expect(instanceTypeGpus('p3.8xlarge')?.gpus).toBe(4);
    expect(instanceTypeGpus('p6-b200.48xlarge')).toEqual({ gpus: 8, model: 'NVIDIA B200' });
    const g5 = ['xlarge', '2xlarge', '4xlarge', '8xlarge', '12xlarge', '16xlarge', '24xlarge', '48xlarge'].map((s) => instanceTypeGpus(`g5.${s}`)?.gpus);
    expect(g5).toEqual([1, 1, 1, 1, 4, 1, 4, 8]);
    expect(instanceTypeGpus('g4dn.12xlarge')?.gpus).toBe(4);
    expect(instanceTypeGpus('a3-highgpu-8g')?.gpus).toBe(8);
  });
  it('unknown or empty types give null, never a guess', () => {
    expect(instanceTypeGpus('m5.large')).toBeNull();
    expect(instanceTypeGpus('')).toBeNull();
    expect(instanceTypeGpus(undefined)).toBeNull();
    for (const spec of INSTANCE_TYPE_GPUS.values()) expect(spec.gpus).toBeGreaterThan(0);
  });
});
