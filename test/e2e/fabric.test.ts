/**
 * Fabric health through a real agent process: fabric faults from the TypeScript fake backend
 * (POST /inject) and from the project's fake libnvidia-ml (fabric fields scripted, changed live
 * over its control socket) are detected on the right GPU with the right severity and clear; on a
 * scratch NVSwitch host (NAVARCH_SYSFS_ROOT) a stopped nvidia-fabricmanager (a stub systemctl on
 * PATH, a real child process) is critical until it runs again, and an error line in its log is a
 * warning.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ActiveFault } from '../../src/events/types.js';
import { defaultDevices, ensureFakeNvmlBuilt, FAKE_NVML_LIB, FakeNvml } from '../helpers/fake-nvml.js';
import { DIST_BUILT, MAIN_JS, REPO_ROOT, startAgent, tempDir, waitFor, type AgentProcess } from './agent-helpers.js';

if (!DIST_BUILT) console.warn(`skipping fabric e2e tests: ${MAIN_JS} is not built (npm run build)`);

const BASE_ARGS = ['--server', 'http://127.0.0.1:9', '--kmsg-path', 'none', '--telemetry-interval', '200ms', '--fabric-boot-grace', '0s'];

async function faults(a: AgentProcess, prefix: string): Promise<ActiveFault[]> {
  return (await a.status()).activeFaults.filter((f) => f.key.startsWith(prefix));
}

/** Wait until the active faults under `prefix` read exactly `want` ("key:gpu:severity", sorted). */
async function expectFaults(a: AgentProcess, prefix: string, want: string[]): Promise<ActiveFault[]> {
  let last: string[] = [];
  try {
    return await waitFor(
      `faults under ${prefix} = ${want.join(', ')}`,
      async () => {
        const fs = await faults(a, prefix);
        last = fs.map((f) => `${f.key}:${f.gpuIndex}:${f.severity}`).sort();
        return JSON.stringify(last) === JSON.stringify([...want].sort()) ? fs : null;
      },
      20_000,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last seen: ${JSON.stringify(last)}`);
  }
}

describe.skipIf(!DIST_BUILT)('fabric faults from the fake backend', () => {
  let agent: AgentProcess;
  beforeAll(async () => {
    agent = await startAgent({ args: ['--gpu-backend', 'fake', ...BASE_ARGS] });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
  });

  it('health summary and mask faults on GPU 5 only, severity follows the summary, recover clears them', async () => {
    expect((await agent.inject({ kind: 'fabric', gpu: 5, healthSummary: 3 })).status).toBe(200);
    const [f] = await expectFaults(agent, 'gpu', ['gpu5/fabric/health:5:warning']);
    expect(f).toMatchObject({ type: 'nvlink', system: 'NVSWITCH', action: 'none', metrics: { fabric_health_summary_name: 'limited_capacity' } });
    expect((await agent.inject({ kind: 'fabric', gpu: 5, healthSummary: 2, healthMask: 6 << 8 })).status).toBe(200);
    const fs = await expectFaults(agent, 'gpu', ['gpu5/fabric/health:5:critical', 'gpu5/fabric/incorrect_configuration:5:critical']);
    expect(fs.find((x) => x.key.endsWith('incorrect_configuration'))).toMatchObject({
      action: 'replace',
      metrics: { fabric_incorrect_configuration: 'incompatible_gpu_firmware' },
    });
    expect((await agent.inject({ kind: 'fabric', gpu: 2, status: 27 })).status).toBe(200);
    await expectFaults(agent, 'gpu', ['gpu5/fabric/health:5:critical', 'gpu5/fabric/incorrect_configuration:5:critical', 'gpu2/fabric/status:2:critical']);
    // The same through the CLI: `navarch-agent inject fabric` (hex mask, dashed flags).
    const cli = spawnSync(process.execPath, [MAIN_JS, 'inject', 'fabric', '--gpu', '7', '--health-mask', '0x10', '--api', agent.url], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(cli.status, cli.stderr).toBe(0);
    await expectFaults(agent, 'gpu', [
      'gpu5/fabric/health:5:critical',
      'gpu5/fabric/incorrect_configuration:5:critical',
      'gpu2/fabric/status:2:critical',
      'gpu7/fabric/route_unhealthy:7:critical',
    ]);
    expect((await agent.inject({ kind: 'recover' })).status).toBe(200);
    await expectFaults(agent, 'gpu', []);
    expect((await agent.status()).fabricManager?.state).toBe('no_nvswitch');
  });
});

function fakeLibAvailable(): boolean {
  try {
    ensureFakeNvmlBuilt();
  } catch (err) {
    console.warn(`fake libnvidia-ml could not be built: ${(err as Error).message}`);
  }
  return existsSync(FAKE_NVML_LIB);
}
const addonReady = DIST_BUILT && existsSync(join(REPO_ROOT, 'build', 'Release', 'navarch_nvml.node')) && fakeLibAvailable();
if (DIST_BUILT && !addonReady)
  console.warn('skipping the fabric e2e test over the fake libnvidia-ml: the addon or the fake library is not built (npm run build:addon)');

describe.skipIf(!addonReady)('fabric faults over the NVML addon and the fake libnvidia-ml', () => {
  let fake: FakeNvml;
  let agent: AgentProcess;
  beforeAll(async () => {
    const devs = defaultDevices(8).map((d) => ({ ...d, telemetry: { ...d.telemetry, fabricInfoVersion: 3 } }));
    devs[3]!.telemetry = { ...devs[3]!.telemetry, fabricHealthMask: 1 << 4 }; // route unhealthy
    devs[6]!.telemetry = { ...devs[6]!.telemetry, fabricInfoVersion: 2, fabricState: 1 }; // driver < 580, never registered
    fake = FakeNvml.create({ devices: devs });
    agent = await startAgent({ args: ['--gpu-backend', 'nvml', ...BASE_ARGS], env: fake.env() });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    fake?.cleanup();
  });

  it('route unhealthy on GPU 3 and an unfinished registration on GPU 6 are critical, and clear when fixed live', async () => {
    const fs = await expectFaults(agent, 'gpu', ['gpu3/fabric/route_unhealthy:3:critical', 'gpu6/fabric/state:6:critical']);
    const uuids = new Map((await agent.status()).devices.map((d) => [d.index, d.uuid]));
    for (const f of fs) expect(f.gpuUuid).toBe(uuids.get(f.gpuIndex));
    expect(fs.find((f) => f.gpuIndex === 6)).toMatchObject({ action: 'reboot', metrics: { fabric_info_version: '2', fabric_state_name: 'not_started' } });
    await fake.set(3, 'fabricHealthMask', 2 << 4); // healthy
    await fake.set(6, 'fabricState', 3);
    await expectFaults(agent, 'gpu', []);
  });
});

describe.skipIf(!DIST_BUILT)('nvidia-fabricmanager on an NVSwitch host', () => {
  let agent: AgentProcess;
  let dir: string;
  let log: string;
  let stateFile: string;
  beforeAll(async () => {
    dir = tempDir('fabric-host');
    for (let i = 0; i < 4; i++) {
      const p = join(dir, 'sys/bus/pci/devices', `0000:0${5 + i}:00.0`);
      mkdirSync(p, { recursive: true });
      writeFileSync(join(p, 'vendor'), '0x10de\n');
      writeFileSync(join(p, 'class'), '0x068000\n');
    }
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    stateFile = join(dir, 'fm-state');
    writeFileSync(stateFile, 'failed\n');
    writeFileSync(join(bin, 'systemctl'), `#!/bin/sh\n[ "$1" = is-active ] && [ "$2" = nvidia-fabricmanager ] || exit 9\ncat "${stateFile}"\nexit 3\n`);
    chmodSync(join(bin, 'systemctl'), 0o755);
    log = join(dir, 'fabricmanager.log');
    writeFileSync(log, '[Feb 27 2025 14:10:02] [INFO] [tid 1808] multicast group 1 is allocated.\n');
    agent = await startAgent({
      args: ['--gpu-backend', 'fake', ...BASE_ARGS, '--fabric-manager-log', log],
      env: { NAVARCH_SYSFS_ROOT: dir, PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` },
    });
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
  });

  it('stopped service is critical (node level), a logged error a warning; running again clears the service fault', async () => {
    const [f] = await expectFaults(agent, 'node/fabric_manager', ['node/fabric_manager:-1:critical']);
    expect(f).toMatchObject({ gpuIndex: -1, system: 'NVSWITCH', action: 'reboot', metrics: { service_state: 'failed' } });
    const st = (await agent.status()).fabricManager;
    expect(st).toMatchObject({ state: 'running', nvswitch: '4 NVSwitch PCI devices', logPath: log });
    appendFileSync(
      log,
      '[Feb 27 2025 15:10:02] [ERROR] [tid 12727] detected NVSwitch non-fatal error 12028 on fid 0 on NVSwitch pci bus id 00000000:86:00.0 physical id 3 port 61\n',
    );
    const fs = await expectFaults(agent, 'node/fabric_manager', ['node/fabric_manager:-1:critical', 'node/fabric_manager/log:-1:warning']);
    expect(fs.find((x) => x.key.endsWith('/log'))).toMatchObject({ metrics: { sxid: '12028', nvswitch_pci: '00000000:86:00.0' } });
    writeFileSync(stateFile, 'active\n');
    await expectFaults(agent, 'node/fabric_manager', ['node/fabric_manager/log:-1:warning']);
    expect((await agent.status()).fabricManager?.service).toEqual({ state: 'active', detail: 'active' });
  });
});
