/**
 * Logging: pino, JSON lines on stdout (journald), pretty when stdout is a TTY, one child logger
 * per component (`log.child({ component: 'kmsg' })`). `flushLogs()` writes out what is buffered;
 * call it before exiting.
 */
import pino, { type DestinationStream, type Logger } from 'pino';
import prettyFactory from 'pino-pretty';
import { LogRateLimiter, limitLogArgs } from './log-limit.js';

export type { Logger };

export interface LoggerOptions {
  level?: string;
  /** Force pretty output (default: stdout is a TTY and NAVARCH_LOG_FORMAT is not "json"). */
  pretty?: boolean;
  /** Destination for tests (a writable stream); default: stdout via a sonic-boom destination. */
  destination?: DestinationStream;
  /** Base fields added to every line. */
  base?: Record<string, unknown>;
  /** Clock of the per-message rate limit (tests). */
  now?: () => number;
}

let rootDestination: (DestinationStream & { flushSync?: () => void }) | null = null;

/** Every line bounded in size and rate (src/log-limit.ts); child loggers inherit the hook. */
function boundedHooks(now?: () => number): pino.LoggerOptions['hooks'] {
  const limiter = new LogRateLimiter(now);
  return {
    logMethod(args, method) {
      const out = limitLogArgs(args, limiter);
      if (out !== null) method.apply(this, out as Parameters<typeof method>);
    },
  };
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? 'info';
  const base = { service: 'navarch-agent', ...(opts.base ?? {}) };
  const hooks = boundedHooks(opts.now);
  if (opts.destination) {
    return pino({ level, base, hooks, timestamp: pino.stdTimeFunctions.isoTime }, opts.destination);
  }
  const pretty = opts.pretty ?? (process.stdout.isTTY === true && process.env.NAVARCH_LOG_FORMAT !== 'json');
  if (pretty) {
    // pino-pretty in-process (no worker thread): synchronous, so nothing is lost at exit.
    const dest = prettyStream();
    rootDestination = dest;
    return pino({ level, base, hooks, timestamp: pino.stdTimeFunctions.isoTime }, dest);
  }
  const dest = pino.destination({ dest: 1, sync: false, minLength: 0 });
  rootDestination = dest;
  return pino({ level, base, hooks, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

function prettyStream(): DestinationStream {
  return prettyFactory({ colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service', sync: true });
}

/** Flush buffered log lines synchronously (safe in exit paths). */
export function flushLogs(): void {
  try {
    rootDestination?.flushSync?.();
  } catch {
    // Nothing sensible to do when stdout is gone.
  }
}

/** A logger that discards everything (library use, tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
