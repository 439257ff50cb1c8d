/**
 * nvidia-fabricmanager on NVSwitch hosts (HGX/DGX A100, H100, H200). CUDA cannot use the GPUs of
 * such a host while the fabric manager is down (nvml-abi.md §3.7, gpud's fabric-manager component),
 * so on a host with NVSwitches (src/host/nvswitch.ts):
 *   node/fabric_manager       service not active `bootGraceMs` after boot   critical / reboot
 *   node/fabric_manager/log   ERROR/FATAL lines in its log                   warning  / none
 * The service clears after `clearAfterGood` active checks in a row; the log fault clears once no
 * error line was logged for `logQuietMs`. A host without NVSwitches gets no check; a host without
 * systemctl (or one that does not answer in time) reads "unknown", which judges nothing.
 *
 * `judgeFabricManager` is pure; `FabricManagerMonitor` does the I/O on an interval.
 */
import { execFile } from 'node:child_process';
import { nodeKey } from '../events/fault-key.js';
import type { HealthEventInput, Severity } from '../events/types.js';
import { detectNvSwitches, type NvSwitchEvidence } from '../host/nvswitch.js';
import { DEFAULT_FABRIC_BOOT_GRACE_MS } from './fabric.js';
import { LogTail, parseFabricManagerLine, type FabricManagerLogError, type LogTailStats } from './fabric-manager-log.js';

export const FABRIC_MANAGER_UNIT = 'nvidia-fabricmanager';
export const DEFAULT_FABRIC_MANAGER_LOG = '/var/log/fabricmanager.log';
export const FABRIC_MANAGER_KEY = nodeKey('fabric_manager');
export const FABRIC_MANAGER_LOG_KEY = nodeKey('fabric_manager', 'log');

export type ServiceStateName = 'active' | 'inactive' | 'failed' | 'activating' | 'deactivating' | 'reloading' | 'unknown';

export interface ServiceState {
  state: ServiceStateName;
  /** What systemctl said, or why the state is unknown. */
  detail: string;
}

const KNOWN_STATES = new Set<string>(['active', 'inactive', 'failed', 'activating', 'deactivating', 'reloading']);

/** Map `systemctl is-active` output to a state; anything else is unknown. */
export function serviceStateFrom(stdout: string): ServiceState {
  const word = (stdout.split('\n')[0] ?? '').trim();
  return KNOWN_STATES.has(word)
    ? { state: word as ServiceStateName, detail: word }
    : { state: 'unknown', detail: word === '' ? 'no answer' : word.slice(0, 80) };
}

/**
 * `systemctl is-active UNIT` with a deadline (killed after `timeoutMs`) and at most 4 KiB of
 * output. A missing systemctl, a timeout or unexpected output is "unknown".
 */
export function systemctlIsActive(unit: string, timeoutMs = 5000, command = 'systemctl'): Promise<ServiceState> {
  return new Promise((resolve) => {
    execFile(command, ['is-active', unit], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 4096, windowsHide: true }, (err, stdout) => {
      const e = err as (NodeJS.ErrnoException & { killed?: boolean }) | null;
      if (e?.code === 'ENOENT') return resolve({ state: 'unknown', detail: `${command} not found` });
      if (e?.killed) return resolve({ state: 'unknown', detail: `${command} did not answer within ${timeoutMs} ms` });
      if (e?.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER') return resolve({ state: 'unknown', detail: `${command} wrote more than 4096 bytes` });
      // is-active exits non-zero for every state but active; the state word is on stdout.
      resolve(serviceStateFrom(String(stdout)));
    });
  });
}

export interface FabricManagerConfig {
  bootGraceMs: number;
  /** Active checks in a row that clear a service fault. */
  clearAfterGood: number;
  /** The log fault clears after this long without an error line. */
  logQuietMs: number;
}

export const DEFAULT_FABRIC_MANAGER_CONFIG: Readonly<FabricManagerConfig> = Object.freeze({
  bootGraceMs: DEFAULT_FABRIC_BOOT_GRACE_MS,
  clearAfterGood: 2,
  logQuietMs: 600_000,
});

export interface FabricManagerJudgeState {
  /** The service fault, while active. */
  service: { good: number } | null;
  /** The log fault, while active. */
  log: { lastErrorMs: number } | null;
}

export interface FabricManagerObservation {
  nowMs: number;
  sinceBootMs: number;
  service: ServiceState;
  /** Error lines logged since the previous observation. */
  errors: readonly FabricManagerLogError[];
}

function event(
  key: string,
  severity: Severity,
  fault: 'raise' | 'clear',
  message: string,
  metrics: Record<string, string>,
  nowMs: number,
  extra: Partial<HealthEventInput> = {},
): HealthEventInput {
  return {
    type: 'nvlink',
    system: 'NVSWITCH',
    gpuIndex: -1,
    gpuUuid: '',
    metrics,
    message,
    timeMs: nowMs,
    severity,
    action: 'none',
    citation: fault === 'clear' ? 'navarch-agent fabric manager: condition cleared' : '',
    source: 'agent',
    key,
    fault,
    ...extra,
  };
}

/** Judge one observation. Pure: `prev` is not modified. */
export function judgeFabricManager(
  prev: FabricManagerJudgeState | null,
  obs: FabricManagerObservation,
  cfg: FabricManagerConfig = DEFAULT_FABRIC_MANAGER_CONFIG,
): { events: HealthEventInput[]; state: FabricManagerJudgeState } {
  const state: FabricManagerJudgeState = { service: prev?.service ? { ...prev.service } : null, log: prev?.log ? { ...prev.log } : null };
  const events: HealthEventInput[] = [];
  const s = obs.service.state;
  const metrics = { service: FABRIC_MANAGER_UNIT, service_state: s, service_detail: obs.service.detail };

  if (s === 'active') {
    if (state.service) {
      state.service.good++;
      if (state.service.good >= cfg.clearAfterGood) {
        events.push(event(FABRIC_MANAGER_KEY, 'info', 'clear', `${FABRIC_MANAGER_UNIT} is active again`, metrics, obs.nowMs));
        state.service = null;
      }
    }
  } else if (s !== 'unknown' && s !== 'reloading' && obs.sinceBootMs >= cfg.bootGraceMs) {
    if (!state.service) {
      events.push(
        event(
          FABRIC_MANAGER_KEY,
          'critical',
          'raise',
          `${FABRIC_MANAGER_UNIT} is ${s} on a host with NVSwitches: CUDA cannot use the GPUs`,
          { ...metrics, uptime_seconds: String(Math.floor(obs.sinceBootMs / 1000)) },
          obs.nowMs,
          {
            action: 'reboot',
            citation: 'NVIDIA Fabric Manager: on NVSwitch systems GPUs cannot run CUDA work while nvidia-fabricmanager is down (gpud fabric-manager component)',
          },
        ),
      );
      state.service = { good: 0 };
    } else {
      state.service.good = 0;
    }
  }

  if (obs.errors.length > 0) {
    const last = obs.errors[obs.errors.length - 1] as FabricManagerLogError;
    const withSxid = [...obs.errors].reverse().find((e) => e.sxid !== null);
    const m: Record<string, string> = { error_lines: String(obs.errors.length), last_error: last.text, log_level: last.level };
    if (withSxid) {
      m.sxid = String(withSxid.sxid);
      m.sxid_fatal = String(withSxid.sxidFatal);
      if (withSxid.nvswitchPci) m.nvswitch_pci = withSxid.nvswitchPci;
    }
    events.push(
      event(
        FABRIC_MANAGER_LOG_KEY,
        'warning',
        'raise',
        `${FABRIC_MANAGER_UNIT} logged ${obs.errors.length} error line${obs.errors.length === 1 ? '' : 's'}: ${last.text.slice(0, 200)}`,
        m,
        obs.nowMs,
        {
          count: obs.errors.length,
          citation: 'nvidia-fabricmanager log: ERROR/FATAL lines (NVSwitch SXids are judged from the kernel log)',
        },
      ),
    );
    state.log = { lastErrorMs: obs.nowMs };
  } else if (state.log && obs.nowMs - state.log.lastErrorMs >= cfg.logQuietMs) {
    events.push(
      event(FABRIC_MANAGER_LOG_KEY, 'info', 'clear', `${FABRIC_MANAGER_UNIT} logged no error for ${Math.round(cfg.logQuietMs / 1000)} s`, {}, obs.nowMs),
    );
    state.log = null;
  }
  return { events, state };
}

export interface FabricManagerStatus {
  /** no_nvswitch: no check; running: checked every interval. */
  state: 'starting' | 'no_nvswitch' | 'running' | 'stopped';
  nvswitch: string | null;
  service: ServiceState | null;
  logPath: string | null;
  log: LogTailStats | null;
  checks: number;
}

export interface FabricManagerMonitorOptions {
  onEvents: (events: HealthEventInput[]) => void;
  /** Root of sys/ and dev/ for NVSwitch detection (tests). Default "/". */
  sysRoot?: string;
  /** null: do not read the log. Default /var/log/fabricmanager.log. */
  logPath?: string | null;
  unit?: string;
  /** Check interval. Default 30 s. */
  intervalMs?: number;
  config?: Partial<FabricManagerConfig>;
  /** Host boot time (ms since the epoch); null: counted from the monitor's start. */
  bootTimeMs?: number | null;
  isActive?: (unit: string) => Promise<ServiceState>;
  detect?: (sysRoot: string) => Promise<NvSwitchEvidence>;
  now?: () => number;
  onError?: (err: Error) => void;
}

/** Detects NVSwitches once at start; on an NVSwitch host, checks the service and the log every interval. */
export class FabricManagerMonitor {
  private st: FabricManagerStatus;
  private judge: FabricManagerJudgeState | null = null;
  private tail: LogTail | null = null;
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<HealthEventInput[]> | null = null;
  private readonly cfg: FabricManagerConfig;
  private readonly now: () => number;
  private startedAtMs = 0;

  constructor(private readonly o: FabricManagerMonitorOptions) {
    this.cfg = { ...DEFAULT_FABRIC_MANAGER_CONFIG, ...o.config };
    this.now = o.now ?? Date.now;
    const logPath = o.logPath === undefined ? DEFAULT_FABRIC_MANAGER_LOG : o.logPath;
    this.st = { state: 'starting', nvswitch: null, service: null, logPath, log: null, checks: 0 };
  }

  status(): FabricManagerStatus {
    return { ...this.st, log: this.tail?.stats() ?? null };
  }

  /** Detect NVSwitches; with some, take the first check now and schedule the rest. */
  async start(): Promise<void> {
    this.startedAtMs = this.now();
    const ev = await (this.o.detect ?? detectNvSwitches)(this.o.sysRoot ?? '/');
    if (!ev.present) {
      this.st.state = 'no_nvswitch';
      return;
    }
    this.st.state = 'running';
    this.st.nvswitch = ev.summary;
    if (this.st.logPath !== null) this.tail = new LogTail({ path: this.st.logPath });
    await this.checkNow();
    this.schedule();
  }

  private schedule(): void {
    if (this.st.state !== 'running') return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.checkNow().finally(() => this.schedule());
    }, this.o.intervalMs ?? 30_000);
    this.timer.unref();
  }

  /** One check (joins one in flight). Never rejects; returns the events it produced. */
  checkNow(): Promise<HealthEventInput[]> {
    if (this.st.state !== 'running') return Promise.resolve([]);
    this.inFlight ??= this.check()
      .catch((err: unknown) => {
        this.o.onError?.(err instanceof Error ? err : new Error(String(err)));
        return [] as HealthEventInput[];
      })
      .finally(() => {
        this.inFlight = null;
      });
    return this.inFlight;
  }

  private async check(): Promise<HealthEventInput[]> {
    const unit = this.o.unit ?? FABRIC_MANAGER_UNIT;
    const [service, lines] = await Promise.all([
      (this.o.isActive ?? ((u: string) => systemctlIsActive(u)))(unit),
      this.tail ? this.tail.poll() : Promise.resolve([]),
    ]);
    const errors = lines.map(parseFabricManagerLine).filter((e): e is FabricManagerLogError => e !== null);
    const nowMs = this.now();
    const boot = this.o.bootTimeMs ?? this.startedAtMs;
    const r = judgeFabricManager(this.judge, { nowMs, sinceBootMs: nowMs - boot, service, errors }, this.cfg);
    this.judge = r.state;
    this.st.service = service;
    this.st.checks++;
    if (r.events.length > 0) this.o.onEvents(r.events);
    return r.events;
  }

  /** An operator cleared `key` (POST /faults/clear): judge it afresh, so a fault still there is raised again. */
  forget(key: string): void {
    if (!this.judge) return;
    if (key === FABRIC_MANAGER_KEY) this.judge = { ...this.judge, service: null };
    else if (key === FABRIC_MANAGER_LOG_KEY) this.judge = { ...this.judge, log: null };
  }

  async stop(): Promise<void> {
    if (this.st.state === 'running') this.st.state = 'stopped';
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.inFlight) await this.inFlight;
    await this.tail?.close();
  }
}
