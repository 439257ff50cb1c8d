import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LogRateLimiter, LOG_BURST, limitLogArgs } from '../../src/log-limit.js';
import { createLogger } from '../../src/log.js';
import { truncateText } from '../../src/util/truncate.js';

describe('truncateText', () => {
  it('keeps short text and cuts long text with its size', () => {
    expect(truncateText('abc')).toBe('abc');
    const big = 'x'.repeat(50 * 1024 * 1024);
    const t = truncateText(big);
    expect(t).toBe(`${'x'.repeat(300)}... (52428800 bytes)`);
  });
});

describe('LogRateLimiter', () => {
  it('lets a burst through, drops the rest, reports the count when it resumes', () => {
    let now = 0;
    const lim = new LogRateLimiter(() => now, 3, 1);
    expect([lim.admit('a'), lim.admit('a'), lim.admit('a')]).toEqual([0, 0, 0]);
    expect(lim.admit('a')).toBeNull();
    expect(lim.admit('a')).toBeNull();
    expect(lim.admit('b')).toBe(0); // another key has its own bucket
    now += 1000;
    expect(lim.admit('a')).toBe(2);
    expect(lim.admit('a')).toBeNull();
  });
});

describe('bounded logger', () => {
  it('truncates strings in messages, fields and errors, and rate-limits per message', () => {
    const lines: string[] = [];
    const dest = new Writable({ write: (c, _e, cb) => (lines.push(String(c)), cb()) });
    let now = 0;
    const log = createLogger({ destination: dest, now: () => now }).child({ component: 't' });
    const huge = 'E'.repeat(5 * 1024 * 1024);
    for (let i = 0; i < 1000; i++) log.warn({ err: huge, nested: { m: huge } }, 'registration failed');
    log.error(new Error(huge), 'boom');
    now += 5_000;
    log.warn({ err: 'short' }, 'registration failed');
    const parsed = lines
      .join('')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const failed = parsed.filter((p) => p.msg === 'registration failed');
    expect(failed).toHaveLength(LOG_BURST + 1);
    expect(failed.at(-1)?.suppressed).toBe(1000 - LOG_BURST);
    expect(failed.at(-1)?.component).toBe('t');
    for (const p of parsed) expect(JSON.stringify(p).length).toBeLessThan(3000);
    expect(String(failed[0]?.err)).toMatch(/\.\.\. \(5242880 bytes\)$/);
    const boom = parsed.find((p) => p.msg === 'boom') as { err: { message: string } };
    expect(boom.err.message).toMatch(/\.\.\. \(5242880 bytes\)$/);
  });

  it('passes ordinary calls through unchanged', () => {
    expect(limitLogArgs([{ a: 1 }, 'hello %s', 'x'], new LogRateLimiter())).toEqual([{ a: 1 }, 'hello %s', 'x']);
    expect(limitLogArgs(['plain'], new LogRateLimiter())).toEqual(['plain']);
  });
});
