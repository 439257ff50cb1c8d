/**
 * Drives periodic telemetry: one backend snapshot per interval (never two at once), the latest
 * snapshot handed to the agent, and the threshold judge's events handed to the store.
 */
import type { Logger } from 'pino';
import type { GpuBackend } from '../backends/types.js';
import type { HealthEventInput } from '../events/types.js';
import type { DeviceSnapshot } from '../nvml/types.js';
import { emptyJudgeState, judgeSnapshot, telemetryConfig, type JudgeState, type TelemetryConfig } from '../sources/telemetry.js';

export interface TelemetryLoopOptions {
  backend: GpuBackend;
  intervalMs: number;
  log: Logger;
  onSnapshots: (snaps: DeviceSnapshot[]) => void;
  onEvents: (inputs: HealthEventInput[]) => void;
  /** Thresholds of the judge (src/sources/telemetry.ts); intervalMs is taken from above. */
  thresholds?: Partial<TelemetryConfig>;
}

export class TelemetryLoop {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private failures = 0;
  private judgeState: JudgeState = emptyJudgeState();
  private readonly config: TelemetryConfig;

  constructor(private readonly o: TelemetryLoopOptions) {
    this.config = telemetryConfig({ ...(o.thresholds ?? {}), intervalMs: o.intervalMs });
  }

  async start(): Promise<void> {
    await this.sampleNow();
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.sampleNow().finally(() => this.schedule());
    }, this.o.intervalMs);
  }

  /** Take a sample now (joins one already in flight). */
  sampleNow(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.sample().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async sample(): Promise<void> {
    if (this.stopped) return;
    let snaps: DeviceSnapshot[];
    try {
      snaps = await this.o.backend.snapshot();
      this.failures = 0;
    } catch (err) {
      this.failures++;
      if (this.failures === 1 || this.failures % 60 === 0) this.o.log.warn({ err, failures: this.failures }, 'telemetry snapshot failed');
      return;
    }
    this.o.onSnapshots(snaps);
    try {
      const { events, state } = judgeSnapshot(this.judgeState, snaps, this.config);
      this.judgeState = state;
      if (events.length) this.o.onEvents(events);
    } catch (err) {
      this.o.log.error({ err }, 'telemetry judge failed');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
