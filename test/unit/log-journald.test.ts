import { openSync, closeSync, fstatSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { stdoutIsJournal, syslogPriority, withSyslogPrefix } from '../../src/log-journald.js';

describe('syslog priority prefix', () => {
  it('maps pino levels to syslog priorities', () => {
    expect([10, 20, 30, 40, 50, 60].map(syslogPriority)).toEqual([7, 7, 6, 4, 3, 2]);
  });
  it('prefixes a pino JSON line with its priority', () => {
    expect(withSyslogPrefix('{"level":40,"msg":"x"}\n')).toBe('<4>{"level":40,"msg":"x"}\n');
    expect(withSyslogPrefix('not json\n')).toBe('<6>not json\n');
  });
  it('recognises the journal stream by dev:ino of the fd', () => {
    const fd = openSync('/dev/null', 'r');
    try {
      const st = fstatSync(fd, { bigint: true });
      expect(stdoutIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, fd)).toBe(true);
      expect(stdoutIsJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1n}` }, fd)).toBe(false);
      expect(stdoutIsJournal({}, fd)).toBe(false);
    } finally {
      closeSync(fd);
    }
  });
});
