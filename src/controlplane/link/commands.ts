/**
 * Control-plane commands: GetNodeCommands polling and the handling of each command (CORDON,
 * UNCORDON, DRAIN with their hooks; RUN_DIAGNOSTIC one sweep at a time; TERMINATE with the
 * termination marker, a final report and the owner told to exit). Each command runs on its own,
 * so a long drain does not block polling; a command id seen before is ignored.
 */
import { create } from '@bufbuild/protobuf';
import type { ConnectError } from '@connectrpc/connect';
import { GetNodeCommandsRequestSchema, NodeCommandType, type NodeCommand } from '../../gen/navarch/control_plane_pb.js';
import { bounded, within } from '../../util/clock.js';
import { runHook, type HookResult } from '../hooks.js';
import type { CheckResult } from '../model.js';
import { codeName, localInterval, type LinkCore } from './core.js';
import type { Delivery } from './delivery.js';
import { TERMINATE_EXIT_CODE, terminationMarkerPath, writeTerminationMarker, type TerminationMarker } from './termination-marker.js';

const DEFAULT_POLL_MS = 10_000;
/** Command ids remembered for de-duplication. */
const MAX_SEEN = 1000;

export class Commands {
  readonly pollMs: number;
  cordoned = false;
  draining = false;
  terminating = false;
  private readonly seen = new Set<string>();
  private readonly running = new Set<Promise<void>>();
  /** RUN_DIAGNOSTIC sweeps, chained so that they run one after another. */
  private diagChain: Promise<void> = Promise.resolve();

  constructor(
    private readonly c: LinkCore,
    private readonly delivery: Delivery,
    /** Stops the link (TERMINATE): flush and final report within deadlineMs; running commands not awaited. */
    private readonly shutdown: (deadlineMs: number) => Promise<void>,
  ) {
    this.pollMs = localInterval(c.o.commandPollIntervalMs, DEFAULT_POLL_MS, 'commandPollIntervalMs');
  }

  /** One GetNodeCommands; each new command starts on its own. */
  async poll(): Promise<void> {
    const c = this.c;
    if (!c.registered || !c.nodeId || this.terminating) return;
    const req = create(GetNodeCommandsRequestSchema, { nodeId: c.nodeId });
    let commands: NodeCommand[];
    try {
      commands = (await c.call('GetNodeCommands', (o) => c.o.client.rpc.getNodeCommands(req, o))).commands;
    } catch (e) {
      if (!c.abort.signal.aborted) c.log.warn({ code: codeName((e as ConnectError).code), err: (e as ConnectError).rawMessage }, 'command poll failed');
      return;
    }
    for (const cmd of commands) {
      if (this.seen.has(cmd.commandId)) continue;
      this.seen.add(cmd.commandId);
      if (this.seen.size > MAX_SEEN) this.seen.delete(this.seen.values().next().value as string);
      const p = this.handle(cmd)
        .catch((e) => c.log.error({ commandId: cmd.commandId, err: (e as Error).message }, 'command failed'))
        .finally(() => this.running.delete(p));
      this.running.add(p);
    }
  }

  /** Waits for the commands still running, at most ms on the link's clock. */
  async settle(ms: number): Promise<void> {
    if (this.running.size > 0) await within(this.c.clock, Promise.allSettled([...this.running]), ms);
  }

  private hookTimeout(params: Record<string, string>): number {
    const base = this.c.o.hooks?.timeoutMs ?? 300_000;
    const s = Number(params.timeout);
    return Number.isFinite(s) && s > 0 ? Math.min(3_600_000, s * 1000) : base;
  }

  private async hook(kind: 'drain' | 'cordon', arg: string, cmd: NodeCommand): Promise<HookResult | null> {
    const c = this.c;
    const path = c.o.hooks?.[kind];
    if (!path) return null;
    const env: Record<string, string> = {
      NAVARCH_COMMAND_ID: cmd.commandId,
      NAVARCH_COMMAND_TYPE: NodeCommandType[cmd.type] ?? 'UNKNOWN',
      NAVARCH_NODE_ID: c.nodeId ?? '',
    };
    for (const [k, v] of Object.entries(cmd.parameters)) {
      const name = k.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
      if (name) env[`NAVARCH_PARAM_${name}`] = v;
    }
    const r = await runHook(path, [arg], env, this.hookTimeout(cmd.parameters), c.clock);
    const level = r.ok ? 'info' : 'error';
    c.log[level](
      {
        hook: path,
        arg,
        exitCode: r.exitCode,
        signal: r.signal,
        timedOut: r.timedOut,
        error: r.error,
        durationMs: r.durationMs,
        output: r.output.slice(-1024),
      },
      r.ok ? `${kind} hook succeeded` : `${kind} hook failed`,
    );
    return r;
  }

  private async handle(cmd: NodeCommand): Promise<void> {
    const c = this.c;
    const type = NodeCommandType[cmd.type] ?? `UNKNOWN(${cmd.type})`;
    c.log.info({ commandId: cmd.commandId, type, parameters: cmd.parameters }, 'control-plane command received');
    c.st.commandsHandled += 1;
    switch (cmd.type) {
      case NodeCommandType.CORDON:
        if (cmd.parameters.uncordon === 'true') {
          this.cordoned = false;
          await this.hook('cordon', 'uncordon', cmd);
        } else {
          this.cordoned = true;
          await this.hook('cordon', 'cordon', cmd);
        }
        return;
      case NodeCommandType.UNCORDON:
        this.cordoned = false;
        this.draining = false;
        await this.hook('cordon', 'uncordon', cmd);
        return;
      case NodeCommandType.DRAIN:
        this.cordoned = true;
        this.draining = true;
        await this.hook('drain', 'drain', cmd);
        return;
      case NodeCommandType.RUN_DIAGNOSTIC: {
        // One sweep at a time: N commands in one poll must not run N sweeps against the GPUs at once.
        const run = this.diagChain.then(() => this.diagnostic(cmd));
        this.diagChain = run.catch(() => undefined);
        await run;
        return;
      }
      case NodeCommandType.TERMINATE:
        await this.terminate(cmd);
        return;
      default:
        c.log.warn({ commandId: cmd.commandId, type }, 'unknown command type; skipped');
    }
  }

  private async diagnostic(cmd: NodeCommand): Promise<void> {
    const c = this.c;
    let results: CheckResult[];
    if (!c.o.diagnostics) {
      results = [{ name: 'diagnostic', status: 'unknown', message: 'no diagnostic provider configured', details: { command_id: cmd.commandId } }];
    } else {
      try {
        results = await bounded(c.clock, c.o.diagnostics({ ...cmd.parameters }), c.o.diagnosticTimeoutMs ?? 600_000, 'diagnostic sweep');
      } catch (e) {
        results = [{ name: 'diagnostic', status: 'unknown', message: `diagnostic failed: ${(e as Error).message}`, details: { command_id: cmd.commandId } }];
      }
    }
    c.log.info({ commandId: cmd.commandId, results: results.map((r) => `${r.name}=${r.status}`) }, 'diagnostic results');
    this.delivery.addResults(results.map((r) => ({ ...r, details: { ...(r.details ?? {}), command_id: cmd.commandId } })));
    this.delivery.kick();
  }

  private async terminate(cmd: NodeCommand): Promise<void> {
    const c = this.c;
    if (this.terminating) return;
    this.terminating = true;
    this.cordoned = true;
    this.draining = true;
    if (cmd.parameters.exit === 'false') {
      // Navarch's `exit=false`: prepare for termination (cordon, drain) but keep running.
      c.log.warn({ commandId: cmd.commandId, parameters: cmd.parameters }, 'TERMINATE with exit=false: draining, staying up');
      await this.hook('drain', 'terminate', cmd);
      this.delivery.addResults([
        {
          name: 'agent',
          status: 'unknown',
          message: `drained for termination on command ${cmd.commandId} (exit=false)`,
          details: { command_id: cmd.commandId },
        },
      ]);
      this.terminating = false;
      this.delivery.kick();
      return;
    }
    c.log.warn({ commandId: cmd.commandId, parameters: cmd.parameters }, 'TERMINATE: draining, final report, then exit');
    await this.hook('drain', 'terminate', cmd);
    let markerPath: string | null = null;
    if (c.o.stateDir) {
      const marker: TerminationMarker = { commandId: cmd.commandId, nodeId: c.nodeId ?? '', timeMs: c.clock.now(), reason: 'TERMINATE command' };
      try {
        markerPath = writeTerminationMarker(c.o.stateDir, marker);
      } catch (e) {
        c.log.error({ err: (e as Error).message, markerPath: terminationMarkerPath(c.o.stateDir) }, 'cannot write the termination marker');
      }
    }
    this.delivery.addResults([
      { name: 'agent', status: 'unknown', message: `terminating on command ${cmd.commandId}`, details: { command_id: cmd.commandId } },
    ]);
    // When stop() is already under way it waits for this command and finishes the shutdown itself;
    // waiting here for it to finish would only run out its deadline.
    if (!c.stopping) await this.shutdown(Math.min(30_000, this.hookTimeout(cmd.parameters)));
    c.o.onTerminate?.({ exitCode: TERMINATE_EXIT_CODE, commandId: cmd.commandId, markerPath, parameters: { ...cmd.parameters } });
  }
}
