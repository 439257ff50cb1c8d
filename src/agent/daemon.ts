/**
 * `navarch-agent run`: logger, Agent, systemd readiness/watchdog/status, signals, exit code.
 *   exit 0  stopped by SIGTERM/SIGINT (after flushing) or by a TERMINATE command
 *   exit 1  the host is not usable (backend, event store lock, ...); an unwritable state dir is not fatal
 *   exit 2  bad configuration
 */
import { createLogger, flushLogs } from '../log.js';
import { redactedConfig, type AgentConfig } from '../config/config.js';
import { Notifier } from '../systemd/notify.js';
import { Agent, AgentStartError } from './agent.js';

export interface DaemonOptions {
  version: string;
  env: NodeJS.ProcessEnv;
}

const STATUS_EVERY_MS = 30_000;

export async function runDaemon(cfg: AgentConfig, opts: DaemonOptions): Promise<number> {
  const log = createLogger({ level: cfg.logLevel });
  const notifier = new Notifier({
    env: opts.env,
    onError: (err) => log.warn({ component: 'systemd', err: err.message }, 'sd_notify failed'),
  });
  log.info({ version: opts.version, config: redactedConfig(cfg) }, 'navarch-agent starting');
  if (!cfg.authToken) log.warn({ component: 'controlplane' }, 'no auth token configured: authentication disabled');
  else log.info({ component: 'controlplane', tokenSource: cfg.authTokenSource }, 'auth token loaded');

  // A bug must not leave a half-working daemon: log it, flush, exit 1 (systemd restarts the
  // agent; stored events survive on disk).
  const crash =
    (kind: string) =>
    (err: unknown): void => {
      log.fatal({ err }, `${kind}: exiting`);
      flushLogs();
      process.stderr.write(`navarch-agent: ${kind}: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    };
  process.on('uncaughtException', crash('uncaught exception'));
  process.on('unhandledRejection', crash('unhandled promise rejection'));

  let exitCode = 0;
  let resolveExit!: (reason: string) => void;
  const exitRequested = new Promise<string>((r) => (resolveExit = r));

  // Handlers before the start: the API answers (and faults are stored) while the sources are still
  // starting, and a SIGTERM then must stop the agent cleanly once it is up, not kill it. A second
  // signal before the start is done exits at once, as one during shutdown does.
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (signalled) {
      log.warn({ signal: sig }, 'second signal while starting: exiting without waiting');
      flushLogs();
      process.exit(1);
    }
    signalled = true;
    resolveExit(sig);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  let agent: Agent;
  try {
    agent = await Agent.start({
      config: cfg,
      log,
      version: opts.version,
      env: opts.env,
      onTerminate: (info) => {
        exitCode = info.exitCode;
        resolveExit(`TERMINATE command ${info.commandId}`);
      },
    });
  } catch (err) {
    const usage = err instanceof AgentStartError && err.usage;
    log.fatal({ err: (err as Error).message }, 'cannot start');
    flushLogs();
    process.stderr.write(`navarch-agent: ${(err as Error).message.replace(/\s*\n\s*/g, ' ')}\n`);
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    return usage ? 2 : 1;
  }

  const describe = (): string => {
    const s = agent.status();
    const crit = s.activeFaults.filter((f) => f.severity === 'critical').length;
    return `${s.devices.length} GPU(s) via ${s.backend.kind}; ${s.activeFaults.length} active fault(s)${crit ? ` (${crit} critical)` : ''}; ${s.events.pending} pending; control plane ${s.controlPlane.state}${s.api?.state === 'retrying' ? `; local API not listening (${s.api.address}: ${s.api.lastError})` : ''}`;
  };
  notifier.ready(describe());
  const watchdog = notifier.startWatchdog({ healthy: () => agent.alive() });
  const statusTimer = setInterval(() => notifier.status(describe()), STATUS_EVERY_MS);
  statusTimer.unref();
  log.info({ api: agent.apiUrl, status: describe(), sdNotify: notifier.transport }, 'navarch-agent ready');

  const reason = await exitRequested;
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  // A second signal during shutdown exits at once (after flushing the logs).
  const hardExit = (sig: NodeJS.Signals): void => {
    log.warn({ signal: sig }, 'second signal: exiting without waiting');
    flushLogs();
    process.exit(1);
  };
  process.once('SIGTERM', hardExit);
  process.once('SIGINT', hardExit);
  clearInterval(statusTimer);
  watchdog?.stop();
  notifier.stopping(`stopping: ${reason}`);
  // Bound the whole shutdown: flush deadline plus a margin for closing files and sockets.
  const hardDeadline = setTimeout(() => {
    log.error('shutdown took too long: exiting');
    flushLogs();
    process.exit(1);
  }, cfg.shutdownTimeoutMs + 10_000);
  hardDeadline.unref();
  await agent.stop(reason);
  clearTimeout(hardDeadline);
  process.off('SIGTERM', hardExit);
  process.off('SIGINT', hardExit);
  log.info({ exitCode }, 'navarch-agent exiting');
  flushLogs();
  return exitCode;
}
