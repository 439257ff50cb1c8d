/**
 * journald's syslog priority prefix. When systemd connects stdout to the journal it sets
 * JOURNAL_STREAM to "<st_dev>:<st_ino>" of that stream (systemd.exec(5)); a line starting with
 * "<N>" then gets priority N (SyslogLevelPrefix=, on by default), so `journalctl -p warning`
 * filters the agent's lines. The check compares JOURNAL_STREAM with stdout itself, as
 * sd_journal_stream_fd(3) advises: a shell or child started from a service inherits the variable
 * while its stdout is something else.
 */
import { fstatSync } from 'node:fs';

/** pino level -> syslog priority: trace/debug 7, info 6, warn 4, error 3, fatal 2 (crit). */
export function syslogPriority(pinoLevel: number): number {
  if (pinoLevel >= 60) return 2;
  if (pinoLevel >= 50) return 3;
  if (pinoLevel >= 40) return 4;
  if (pinoLevel >= 30) return 6;
  return 7;
}

const LEVEL_FIELD = /^\{"level":(\d+)/;

/** `<N>` + the JSON line; pino writes `{"level":N,` first. A line without it gets info (6). */
export function withSyslogPrefix(line: string): string {
  const m = LEVEL_FIELD.exec(line);
  return `<${m ? syslogPriority(Number(m[1])) : 6}>${line}`;
}

/** True when JOURNAL_STREAM names the stream that is fd `fd` (default stdout). */
export function stdoutIsJournal(env: NodeJS.ProcessEnv = process.env, fd = 1): boolean {
  const want = env.JOURNAL_STREAM;
  if (!want) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return want === `${st.dev}:${st.ino}`;
  } catch {
    return false;
  }
}
