/**
 * Health delivery: ReportHealth pushes when the store has pending events, periodic reports with
 * the check results, the re-assertion of active faults after a registration, and the acks to the
 * store. One ReportHealth in flight; the store's ack of a delivered batch (an fsync) overlaps
 * with sending the next batch; `store.ack` only after `acknowledged=true`; failures are retried
 * under the retry policy (src/controlplane/retry.ts) and nothing is dropped. Every report states
 * the node's whole current state (node-state.ts).
 */
import { Code, ConnectError } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import { NodeStatus, ReportHealthRequestSchema } from '../../gen/navarch/control_plane_pb.js';
import { bounded, within } from '../../util/clock.js';
import type { CheckResult } from '../model.js';
import { wholeState, type VerdictMode } from '../node-state.js';
import { retryDelayMs } from '../retry.js';
import { eventToProtoSafe, faultToProto, resultToProto } from '../wire.js';
import { codeName, worthLogging, type LinkCore } from './core.js';

const MAX_EXTRA_RESULTS = 256;

export class Delivery {
  private readonly maxBatch: number;
  private readonly verdict: VerdictMode;
  private pumpRunning = false;
  /** Ids whose store.ack() is in progress, and those acks. */
  private readonly acking = new Set<string>();
  private readonly acks = new Set<Promise<void>>();
  private dirty = false;
  private periodicDue = false;
  private needReassert = false;
  private extraResults: CheckResult[] = [];
  /** Waiters for the next end of a pump run or of an ack (the shutdown flush). */
  private changeWaiters: Array<() => void> = [];

  constructor(private readonly c: LinkCore) {
    this.maxBatch = Math.max(1, c.o.maxEventsPerReport ?? 500);
    this.verdict = c.o.verdict ?? 'agent';
  }

  /** After each registration: the first report re-asserts every active fault and carries the check results. */
  registered(): void {
    this.needReassert = true;
    this.periodicDue = true;
    this.kick();
  }

  /** A periodic report (check results) is due. */
  periodic(): void {
    this.periodicDue = true;
    this.kick();
  }

  /** Results for the next report (sent by the next kick()), bounded (oldest dropped, with a warning). */
  addResults(results: CheckResult[]): void {
    this.extraResults.push(...results);
    const over = this.extraResults.length - MAX_EXTRA_RESULTS;
    if (over > 0) {
      this.extraResults.splice(0, over);
      this.c.log.warn({ dropped: over }, 'too many undelivered diagnostic results; dropped the oldest');
    }
  }

  /** Something to send: run the sender unless it runs already. */
  kick(): void {
    const c = this.c;
    this.dirty = true;
    if (this.pumpRunning || !c.registered || c.stopped || c.abort.signal.aborted) return;
    this.pumpRunning = true;
    void this.pump()
      .catch((e) => c.log.error({ err: (e as Error).message }, 'health delivery loop failed'))
      .finally(() => {
        this.pumpRunning = false;
        if (this.dirty && c.registered && !c.abort.signal.aborted) this.kick();
        this.changed();
      });
  }

  /**
   * The shutdown flush: pending events and a final report (with the check results) sent, and
   * their acks written, or deadlineAtMs (on the link's clock) reached, or the registration lost.
   */
  async flush(deadlineAtMs: number): Promise<void> {
    const c = this.c;
    if (!c.registered) return;
    this.periodic();
    while (c.clock.now() < deadlineAtMs && c.registered && (this.pumpRunning || this.periodicDue || this.acks.size > 0 || c.o.store.pendingCount() > 0)) {
      // Kicked only with something to send: events all in an ack just wait for that ack (a pump
      // run with nothing to send would end at once and spin this loop).
      if (!this.pumpRunning && (this.periodicDue || c.o.store.pendingCount() > this.acking.size)) this.kick();
      await within(c.clock, this.nextChange(), deadlineAtMs - c.clock.now());
    }
    if (this.acks.size > 0) await within(c.clock, Promise.allSettled([...this.acks]), Math.max(50, deadlineAtMs - c.clock.now()));
    const left = c.o.store.pendingCount();
    if (left > 0) c.log.warn({ pending: left }, 'stopping with events not yet acknowledged (kept in the store)');
  }

  private nextChange(): Promise<void> {
    return new Promise((resolve) => this.changeWaiters.push(resolve));
  }

  private changed(): void {
    for (const w of this.changeWaiters.splice(0)) w();
  }

  private async pump(): Promise<void> {
    const c = this.c;
    let attempt = 0;
    while (c.registered && c.nodeId && !c.abort.signal.aborted) {
      this.dirty = false;
      const gen = c.generation;
      const wantPeriodic = this.periodicDue;
      const wantReassert = this.needReassert;
      this.periodicDue = false;
      this.needReassert = false;
      const extra = this.extraResults.splice(0);
      // Check results first: the events and the active faults below are then read at one moment.
      const results: CheckResult[] = [];
      if (wantPeriodic && c.o.checks) {
        try {
          results.push(...(await bounded(c.clock, c.o.checks(), c.providerTimeoutMs, 'check provider')));
        } catch (e) {
          c.log.warn({ err: (e as Error).message }, 'check results unavailable for this report');
        }
      }
      // Events whose ack is still being written are not sent again meanwhile (pipelining).
      const store = c.o.store;
      const batch =
        this.acking.size === 0
          ? store.pending(this.maxBatch)
          : store
              .pending(this.maxBatch + this.acking.size)
              .filter((e) => !this.acking.has(e.id))
              .slice(0, this.maxBatch);
      if (batch.length === 0 && !wantPeriodic && !wantReassert && extra.length === 0) {
        if (this.dirty) continue;
        return;
      }
      const events = [];
      // Every report states the whole current state (the server judges each one alone).
      const faults = store.activeFaults();
      const sentKeys = new Set(batch.map((e) => e.key));
      if (wantReassert) {
        const again = faults.filter((f) => !sentKeys.has(f.key));
        events.push(...again.map(faultToProto));
        for (const f of again) sentKeys.add(f.key);
        if (again.length > 0) c.log.warn({ faults: again.map((f) => f.key) }, 're-asserting active faults after registration');
      }
      const state = wholeState(this.verdict, faults, c.clock.now(), { cap: c.o.stateCap, skipKeys: sentKeys });
      if (state.omitted > 0 && worthLogging(c.st.reportsSent))
        c.log.warn({ omitted: state.omitted, cap: c.o.stateCap }, 'more active faults than one report re-sends; the worst are sent');
      results.push(...state.results);
      events.push(...state.faults.map(faultToProto));
      results.push(...extra);
      events.push(...batch.map(eventToProtoSafe));
      const req = create(ReportHealthRequestSchema, { nodeId: c.nodeId, results: results.map(resultToProto), events });
      try {
        const res = await c.call('ReportHealth', (o) => c.o.client.rpc.reportHealth(req, o));
        if (!res.acknowledged) throw new ConnectError('report not acknowledged', Code.Unavailable);
        c.st.reportsSent += 1;
        c.st.configError = null;
        c.st.nodeStatus = `NODE_STATUS_${NodeStatus[res.nodeStatus] ?? 'UNKNOWN'}`;
        attempt = 0;
        if (batch.length > 0) {
          // The ack (an fsync in the durable store) runs while the next batch is sent; the
          // events stay excluded until it is written, and come back if it fails.
          for (const e of batch) this.acking.add(e.id);
          const ack = store
            .ack(batch.map((e) => ({ id: e.id, count: e.count })))
            .catch((e: unknown) =>
              c.log.error({ err: (e as Error).message }, 'store ack failed; the events stay on disk and are sent again after a restart (at-least-once)'),
            )
            .finally(() => {
              for (const e of batch) this.acking.delete(e.id);
              this.acks.delete(ack);
              if (store.pendingCount() > this.acking.size) this.kick();
              this.changed();
            });
          this.acks.add(ack);
          const now = c.clock.now();
          c.st.eventsDelivered += batch.length;
          if (c.o.onDeliveryLatency) for (const ev of batch) c.o.onDeliveryLatency(Math.max(0, now - ev.timeMs), ev);
        }
      } catch (e) {
        // Nothing is dropped: flags and extra results go back, events stay in the store.
        if (wantPeriodic) this.periodicDue = true;
        if (wantReassert) this.needReassert = true;
        this.extraResults.unshift(...extra);
        const ce = ConnectError.from(e);
        if (c.abort.signal.aborted) return;
        c.noteConfigError(ce);
        if (ce.code === Code.NotFound) {
          if (gen === c.generation) c.onForgotten('ReportHealth');
          return;
        }
        const r = retryDelayMs(ce, attempt, c.retry);
        const delay = c.stopping ? Math.min(200, r.ms) : r.ms;
        if (worthLogging(attempt)) {
          c.log.warn(
            { code: codeName(ce.code), err: ce.rawMessage, refused: r.refused, pending: store.pendingCount(), retryInMs: delay, attempt: attempt + 1 },
            'health report failed; will retry (any call that succeeds meanwhile retries at once)',
          );
        }
        attempt += 1;
        await c.backoff(delay);
      }
    }
  }
}
