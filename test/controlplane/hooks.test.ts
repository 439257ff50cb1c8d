import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runHook } from '../../src/controlplane/hooks.js';

const dir = mkdtempSync(join(tmpdir(), 'navarch-hooks-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function script(name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

describe('runHook', () => {
  it('honours its deadline even when a background child keeps the output pipes open', async () => {
    // The grandchild inherits stdout/stderr and outlives the killed hook: 'close' alone never comes.
    const hook = script('bg.sh', 'sleep 60 &\necho started\nsleep 60');
    const r = await runHook(hook, [], {}, 300);
    expect(r.timedOut).toBe(true);
    expect(r.ok).toBe(false);
    expect(r.output).toContain('started');
  }, 30_000);

  it('does not hand the agent auth token (NAVARCH_AUTH_TOKEN) to the hook', async () => {
    const out = join(dir, 'env.out');
    const hook = script('env.sh', `echo "token=[$NAVARCH_AUTH_TOKEN] id=[$NAVARCH_COMMAND_ID]" > "${out}"`);
    const saved = process.env.NAVARCH_AUTH_TOKEN;
    process.env.NAVARCH_AUTH_TOKEN = 'secret-token-value';
    try {
      const r = await runHook(hook, [], { NAVARCH_COMMAND_ID: 'c1' }, 10_000);
      expect(r.ok).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.NAVARCH_AUTH_TOKEN;
      else process.env.NAVARCH_AUTH_TOKEN = saved;
    }
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(out, 'utf8').trim()).toBe('token=[] id=[c1]');
  }, 30_000);
});
