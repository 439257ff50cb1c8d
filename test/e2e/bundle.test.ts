/**
 * The package's bin is the bundled CLI (dist/cli/navarch-agent.mjs, scripts/bundle.mjs), while
 * the other end-to-end tests run tsc's module tree. This runs the bundle itself the whole way:
 * the native addon over the fake libnvidia-ml (found through import.meta.url from the bundle's
 * location), registration, an injected XID through NVML's event path to the control plane, and
 * the one-shot commands.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startDevControlPlane, type DevControlPlane } from '../../src/devcp/dev-server.js';
import { FakeNvml } from '../helpers/fake-nvml.js';
import { BUNDLE_JS, REPO_ROOT, startAgent, waitFor, type AgentProcess } from './agent-helpers.js';

const FAKE_LIB = join(REPO_ROOT, 'build', 'fake-nvml', 'libnvidia-ml.so.1');
const ADDON = join(REPO_ROOT, 'build', 'Release', 'navarch_nvml.node');
const ready = existsSync(BUNDLE_JS) && existsSync(FAKE_LIB) && existsSync(ADDON);
if (!ready) console.warn(`skipping bundle e2e: needs ${BUNDLE_JS} (npm run build), ${ADDON} (npm run build:addon) and ${FAKE_LIB}`);

describe.skipIf(!ready)('the bundled bin', () => {
  let cp: DevControlPlane | undefined;
  let agent: AgentProcess | undefined;
  const cleanup: Array<() => void> = [];
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await cp?.close();
    for (const c of cleanup) c();
  });

  it('prints its version and explains an XID', () => {
    const v = spawnSync(process.execPath, [BUNDLE_JS, '--version'], { encoding: 'utf8' });
    expect(v.status).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const x = spawnSync(process.execPath, [BUNDLE_JS, 'xid', '79'], { encoding: 'utf8' });
    expect(x.status).toBe(0);
    expect(x.stdout).toContain('XID 79');
  });

  it('runs on the native addon: registers, and an XID from NVML reaches the control plane', async () => {
    cp = await startDevControlPlane({ heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 3600 });
    const fake = FakeNvml.create();
    cleanup.push(() => fake.cleanup());
    agent = await startAgent({
      entry: BUNDLE_JS,
      args: ['--gpu-backend', 'nvml', '--server', cp.url, '--node-id', 'bundle-e2e', '--kmsg-path', 'none'],
      env: fake.env(),
    });
    const s = await agent.status();
    expect(s.backend.kind).toBe('nvml');
    await waitFor('registration', () => cp!.node('bundle-e2e'));
    await fake.xid(1, 79);
    await waitFor('XID 79 at the control plane', () => cp!.events('bundle-e2e').some((e) => e.metrics.xid_code === '79' && e.gpuIndex === 1));
  });
});
