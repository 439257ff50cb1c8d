// The README's try-it commands must not read the host's real kernel log: every `run` of the fake
// backend there passes --kmsg-path none (a developer machine's own XIDs would otherwise be reported
// against the fake GPUs).
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const readme = fs.readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');

/** Shell lines inside ```sh blocks. */
function shellLines(md: string): string[] {
  const out: string[] = [];
  for (const m of md.matchAll(/```sh\n([\s\S]*?)```/g)) out.push(...(m[1] ?? '').split('\n').filter((l) => l.trim() !== ''));
  return out;
}

describe('README try-it commands', () => {
  it('every fake-backend `run` passes --kmsg-path none', () => {
    const fakeRuns = shellLines(readme).filter((l) => /\brun\b/.test(l) && /--gpu-backend fake|NAVARCH_FAKE_GPU=(true|1)/.test(l));
    expect(fakeRuns.length).toBeGreaterThan(0);
    for (const l of fakeRuns) expect(l, l).toMatch(/--kmsg-path none\b/);
  });
});
