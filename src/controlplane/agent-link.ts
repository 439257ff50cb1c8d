/**
 * The agent's link to Navarch's control plane, composed of its parts (src/controlplane/link/):
 * registration (forever, with backoff; re-registration when the control plane forgot the node),
 * heartbeats, health delivery (pushes, periodic reports, acks to the store), command polling and
 * handling, the termination marker. This file holds the loops' timers, start, status and the
 * graceful shutdown. Every wait goes through the injected clock (`clock`, default the system's).
 */
import { jittered } from '../util/backoff.js';
import type { CancelTimer } from '../util/clock.js';
import { Commands } from './link/commands.js';
import { LinkCore } from './link/core.js';
import { Delivery } from './link/delivery.js';
import { sendHeartbeat } from './link/heartbeat.js';
import { Registration } from './link/registration.js';
import { readTerminationMarker, terminationMarkerPath, type TerminationMarker } from './link/termination-marker.js';
import type { AgentLinkOptions, LinkStatus } from './link/types.js';

export type { CheckResult, NodeInventory, NodeMetricsSample } from './model.js';
export type { AgentLinkOptions, LinkStatus, RpcInfo, TerminateInfo } from './link/types.js';
export { isConfigError } from './link/core.js';
export { validateServerInterval } from './link/registration.js';
export { readTerminationMarker, TERMINATE_EXIT_CODE, TERMINATION_MARKER, type TerminationMarker } from './link/termination-marker.js';

export class AgentLink {
  private readonly c: LinkCore;
  private readonly registration: Registration;
  private readonly delivery: Delivery;
  private readonly commands: Commands;
  private started = false;
  private terminated: TerminationMarker | null = null;
  private unsubscribe: (() => void) | null = null;
  private timers: { heartbeat: CancelTimer | null; health: CancelTimer | null; poll: CancelTimer | null } = { heartbeat: null, health: null, poll: null };
  private readonly stoppedPromise: Promise<void>;
  private markStopped: () => void = () => {};

  constructor(opts: AgentLinkOptions) {
    this.c = new LinkCore(opts);
    this.delivery = new Delivery(this.c);
    this.registration = new Registration(this.c, {
      onUnregistered: () => this.clearTimers(),
      onRegistered: () => {
        this.startLoops();
        // Registration resets the node to ACTIVE: re-assert what is wrong at once.
        this.delivery.registered();
      },
    });
    this.commands = new Commands(this.c, this.delivery, (deadlineMs) => this.shutdown(deadlineMs, false));
    this.c.onForgotten = (method) => this.registration.forgotten(method);
    this.stoppedPromise = new Promise((resolve) => (this.markStopped = resolve));
  }

  /** Starts registration (in the background) and the loops. Idempotent. */
  start(): void {
    if (this.started) return;
    this.started = true;
    const { o, log } = this.c;
    if (o.stateDir) {
      this.terminated = readTerminationMarker(o.stateDir);
      if (this.terminated) {
        log.error(
          { commandId: this.terminated.commandId, at: new Date(this.terminated.timeMs).toISOString() },
          `node was terminated by control-plane command; not registering. Remove ${terminationMarkerPath(o.stateDir)} to bring it back`,
        );
        return;
      }
    }
    this.unsubscribe = o.store.onPending(() => this.delivery.kick());
    this.registration.ensure('start');
  }

  /** Resolves once registered (immediately when already registered). */
  whenRegistered(): Promise<void> {
    return this.registration.whenRegistered();
  }

  status(): LinkStatus {
    const { c, registration: r, commands: k } = this;
    return {
      nodeId: c.nodeId,
      url: c.o.client.url.toString().replace(/\/$/, ''),
      registered: c.registered,
      registrations: c.st.registrations,
      configError: c.st.configError,
      lastError: c.st.lastError,
      lastSuccessMs: c.st.lastSuccessMs,
      lastRegisteredMs: c.st.lastRegisteredMs,
      nodeStatus: c.st.nodeStatus,
      pending: c.o.store.pendingCount(),
      eventsDelivered: c.st.eventsDelivered,
      reportsSent: c.st.reportsSent,
      heartbeatsSent: c.st.heartbeatsSent,
      heartbeatIntervalMs: r.heartbeatMs,
      healthIntervalMs: r.healthMs,
      commandPollIntervalMs: k.pollMs,
      cordoned: k.cordoned,
      draining: k.draining,
      terminating: k.terminating,
      terminated: this.terminated,
      commandsHandled: c.st.commandsHandled,
    };
  }

  /** Sends a report now (events plus current check results), e.g. after a state change. */
  reportNow(): void {
    this.delivery.periodic();
  }

  /**
   * Stops the loops, flushes pending events and sends a final report within deadlineMs (default
   * 10 s), then cancels whatever is still in flight. Resolves when done; never rejects.
   */
  async stop(opts: { deadlineMs?: number } = {}): Promise<void> {
    await this.shutdown(opts.deadlineMs ?? 10_000, true);
  }

  /** Heartbeat (first at once), periodic report and command poll timers of the current registration. */
  private startLoops(): void {
    this.clearTimers();
    const { c, registration: r } = this;
    const gen = c.generation;
    const live = (): boolean => gen === c.generation && !c.stopping;
    const heartbeat = async (): Promise<void> => {
      if (!live()) return;
      await sendHeartbeat(c);
      if (live()) this.timers.heartbeat = c.clock.setTimer(() => void heartbeat(), jittered(r.heartbeatMs, c.rnd));
    };
    this.timers.heartbeat = c.clock.setTimer(() => void heartbeat(), 0);
    const health = (): void => {
      if (!live()) return;
      this.delivery.periodic();
      this.timers.health = c.clock.setTimer(health, jittered(r.healthMs, c.rnd));
    };
    this.timers.health = c.clock.setTimer(health, jittered(r.healthMs, c.rnd));
    const poll = async (): Promise<void> => {
      if (!live()) return;
      await this.commands.poll();
      if (live()) this.timers.poll = c.clock.setTimer(() => void poll(), jittered(this.commands.pollMs, c.rnd));
    };
    this.timers.poll = c.clock.setTimer(() => void poll(), jittered(Math.min(this.commands.pollMs, 1000), c.rnd));
  }

  private clearTimers(): void {
    for (const cancel of Object.values(this.timers)) cancel?.();
    this.timers = { heartbeat: null, health: null, poll: null };
  }

  private async shutdown(deadlineMs: number, waitCommands: boolean): Promise<void> {
    const c = this.c;
    if (c.stopping) {
      await this.stoppedPromise;
      return;
    }
    c.stopping = true;
    const deadline = c.clock.now() + Math.max(0, deadlineMs);
    this.clearTimers();
    c.wakeSleepers();
    // Flush events and send the final report (with current check results).
    await this.delivery.flush(deadline);
    if (waitCommands) await this.commands.settle(Math.max(0, deadline - c.clock.now()));
    c.abort.abort();
    c.wakeSleepers();
    this.unsubscribe?.();
    this.unsubscribe = null;
    c.registered = false;
    c.stopped = true;
    c.o.client.close();
    c.log.info('control-plane link stopped');
    this.markStopped();
  }
}
