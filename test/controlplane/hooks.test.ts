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
});
