/**
 * Test helper for the fake libnvidia-ml.so.1 (native/fake-nvml, spec in docs/fake-nvml.md).
 *
 *   const fake = FakeNvml.create({ devices: defaultDevices(2) });
 *   fake.applyToProcess();            // NAVARCH_NVML_LIBRARY + NAVARCH_FAKE_NVML_CONFIG
 *   const nvml = openNvml({});        // the addon now talks to the fake
 *   await fake.xid(0, 79);            // injected over the control socket
 *   fake.cleanup();
 *
 * The control socket only listens while the library is initialised (between the first nvmlInit
 * and the last nvmlShutdown in the process that loaded it); inject() waits up to
 * `connectTimeoutMs` for it to appear.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Absolute path of build/fake-nvml/libnvidia-ml.so.1. */
export const FAKE_NVML_LIB: string = join(REPO_ROOT, 'build', 'fake-nvml', 'libnvidia-ml.so.1');

/** NVML event type names understood by the fake (same names as NvmlEventType). */
export type FakeEventName =
  | 'xid'
  | 'ecc_sbe'
  | 'ecc_dbe'
  | 'pstate'
  | 'clock'
  | 'power_source'
  | 'mig_config'
  | 'ecc_storm'
  | 'dram_retirement_event'
  | 'dram_retirement_failure'
  | 'non_fatal_poison'
  | 'fatal_poison'
  | 'gpu_unavailable'
  | 'gpu_recovery_action';

/** Telemetry values in NVML units (see docs/fake-nvml.md). */
export interface FakeTelemetry {
  temperatureC?: number;
  powerUsageMw?: number;
  powerLimitMw?: number;
  gpuUtil?: number;
  memUtil?: number;
  memoryTotal?: number;
  memoryUsed?: number;
  memoryReserved?: number;
  smClockMhz?: number;
  memClockMhz?: number;
  clockEventReasons?: number;
  pstate?: number;
  fanSpeed?: number;
  persistenceMode?: number | boolean;
  eccCurrent?: number | boolean;
  eccPending?: number | boolean;
  eccVolatileCorrected?: number;
  eccVolatileUncorrected?: number;
  eccAggregateCorrected?: number;
  eccAggregateUncorrected?: number;
  retiredPagesSbe?: number;
  retiredPagesDbe?: number;
  retiredPagesPending?: number | boolean;
  remappedCorrected?: number;
  remappedUncorrected?: number;
  remappedPending?: number | boolean;
  remappedFailure?: number | boolean;
  pcieReplay?: number;
  pcieGenCurrent?: number;
  pcieGenMax?: number;
  pcieWidthCurrent?: number;
  pcieWidthMax?: number;
  nvlinkCount?: number;
  nvlinkDown?: number[];
  nvlinkReplay?: number;
  nvlinkRecovery?: number;
  nvlinkCrcFlit?: number;
  nvlinkCrcData?: number;
  /** nvmlDeviceGetGpuFabricInfoV: 0 NOT_SUPPORTED (default), 2 a driver < 580 (v3 refused), 3 v3 and v2. */
  fabricInfoVersion?: number;
  /** Fabric state (default 3 completed), status (nvmlReturn_t), clique id, health mask, summary (v3; default 1 healthy). */
  fabricState?: number;
  fabricStatus?: number;
  fabricCliqueId?: number;
  fabricHealthMask?: number;
  fabricHealthSummary?: number;
  /** Field value 82 NVML_FI_DEV_MEMORY_TEMP, C (default 40). */
  memoryTempC?: number;
  /** nvmlDeviceGetTotalEnergyConsumption, mJ (default 0). */
  totalEnergyMj?: number;
  /** nvmlDeviceGetEncoderUtilization / DecoderUtilization, % (default 0). */
  encoderUtil?: number;
  decoderUtil?: number;
  /** nvmlDeviceGetPcieThroughput TX / RX, KB/s (default 0). */
  pcieTxKBps?: number;
  pcieRxKBps?: number;
  /** Field values 138 / 139 NVLink data TX / RX, KiB over all links (scopeId 0xFFFFFFFF; default 0). */
  nvlinkDataTxKiB?: number;
  nvlinkDataRxKiB?: number;
}

/** Numeric telemetry keys accepted by the `set` op. */
export type FakeTelemetryField = Exclude<keyof FakeTelemetry, 'nvlinkDown'>;

/** Getter groups that can be made NOT_SUPPORTED (telemetry keys plus these). */
export type FakeUnsupportedName =
  keyof FakeTelemetry | 'serial' | 'minorNumber' | 'nvlink' | 'ecc' | 'retiredPages' | 'remappedRows' | 'pcie' | 'name' | 'uuid' | 'pciInfo';

export interface FakeDeviceConfig {
  name?: string;
  uuid?: string;
  serial?: string;
  pci?: { domain?: number; bus?: number; device?: number; pciDeviceId?: number; pciSubSystemId?: number };
  minorNumber?: number;
  supportedEvents?: FakeEventName[];
  telemetry?: FakeTelemetry;
  unsupported?: FakeUnsupportedName[];
  lost?: boolean;
  /** `function` is an NVML entry point name (or "*" for every device call). */
  hang?: { function: string; ms: number };
}

export interface FakeNvmlConfig {
  driverVersion?: string;
  nvmlVersion?: string;
  cudaDriverVersion?: number;
  /** nvmlReturn_t that nvmlInit_v2 returns (0 = success). */
  initError?: number;
  /** nvmlInit blocks this long (a wedged driver). */
  initHangMs?: number;
  /** Entry points dlsym() must not find. */
  missingSymbols?: string[];
  controlSocket?: string;
  devices?: FakeDeviceConfig[];
}

const DEFAULT_BUS = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];

/** Plausible H100 SXM devices with distinct UUIDs, serials and bus ids (the fake's own defaults). */
export function defaultDevices(n = 8): FakeDeviceConfig[] {
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new RangeError(`defaultDevices: n must be 0..64, got ${n}`);
  return Array.from({ length: n }, (_, i) => ({
    name: 'NVIDIA H100 80GB HBM3',
    uuid: `GPU-5ca1ab1e-${i.toString(16).padStart(4, '0')}-4e56-8a4d-${(0x100000 + i).toString(16).padStart(12, '0')}`,
    serial: `1650924060${String(i + 1).padStart(3, '0')}`,
    pci: { domain: Math.floor(i / 8), bus: DEFAULT_BUS[i % 8]!, device: 0, pciDeviceId: 0x233010de, pciSubSystemId: 0x16c110de },
    minorNumber: i,
    supportedEvents: ['ecc_sbe', 'ecc_dbe', 'pstate', 'xid', 'clock'],
    telemetry: {
      temperatureC: 33 + i,
      powerUsageMw: 72000 + 1000 * i,
      powerLimitMw: 700000,
      gpuUtil: 0,
      memUtil: 0,
      memoryTotal: 85520809984,
      memoryUsed: 566231040,
      memoryReserved: 0,
      smClockMhz: 345,
      memClockMhz: 2619,
      clockEventReasons: 1,
      pstate: 0,
      fanSpeed: 0,
      persistenceMode: 1,
      eccCurrent: 1,
      eccPending: 1,
      eccVolatileCorrected: 0,
      eccVolatileUncorrected: 0,
      eccAggregateCorrected: 0,
      eccAggregateUncorrected: 0,
      retiredPagesSbe: 0,
      retiredPagesDbe: 0,
      retiredPagesPending: 0,
      remappedCorrected: 0,
      remappedUncorrected: 0,
      remappedPending: 0,
      remappedFailure: 0,
      pcieReplay: 0,
      pcieGenCurrent: 5,
      pcieGenMax: 5,
      pcieWidthCurrent: 16,
      pcieWidthMax: 16,
      nvlinkCount: 18,
      nvlinkDown: [],
      nvlinkReplay: 0,
      nvlinkRecovery: 0,
      nvlinkCrcFlit: 0,
      nvlinkCrcData: 0,
      memoryTempC: 40,
      totalEnergyMj: 0,
      encoderUtil: 0,
      decoderUtil: 0,
      pcieTxKBps: 0,
      pcieRxKBps: 0,
      nvlinkDataTxKiB: 0,
      nvlinkDataRxKiB: 0,
    },
    unsupported: [],
    lost: false,
  }));
}

export interface InjectOptions {
  /** How long to wait for the socket to accept (it exists only while NVML is initialised). Default 10000. */
  connectTimeoutMs?: number;
  /** Deadline for the reply once connected. Default 30000 (a storm of 10^6 events takes a while). */
  replyTimeoutMs?: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Sends one JSON request line and resolves with the parsed reply line. */
function requestOnce(socketPath: string, req: object, replyTimeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(socketPath);
    let buf = '';
    let settled = false;
    const done = (err: Error | null, value?: Record<string, unknown>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(value!);
    };
    const timer = setTimeout(() => done(new Error(`fake-nvml: no reply within ${replyTimeoutMs} ms`)), replyTimeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > 1 << 20) done(new Error('fake-nvml: reply too long'));
        return;
      }
      try {
        done(null, JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      } catch (e) {
        done(new Error(`fake-nvml: unparsable reply ${JSON.stringify(buf.slice(0, 200))}: ${(e as Error).message}`));
      }
    });
    sock.on('error', (e) => done(e));
    sock.on('close', () => done(new Error('fake-nvml: connection closed without a reply')));
  });
}

export interface FakeNvmlStats {
  queued: number;
  waits: number;
  recorded: number;
  dropped: number;
  eventSets: number;
  initCount: number;
  devices: number;
  /** NVML calls blocked in an injected hang right now. */
  hung: number;
  /** CLOCK_MONOTONIC ns of the last enqueue, and of the reply. */
  lastEnqueueNs: number;
  nowNs: number;
}

export class FakeNvml {
  readonly dir: string;
  readonly configPath: string;
  readonly socketPath: string;
  private cleaned = false;

  private constructor(dir: string, config: FakeNvmlConfig) {
    this.dir = dir;
    this.configPath = join(dir, 'fake-nvml.json');
    this.socketPath = config.controlSocket ?? join(dir, 'control.sock');
    this.write(config);
  }

  /** Writes a config (8 default H100s unless `devices` is given) into a new temp directory. */
  static create(config: Partial<FakeNvmlConfig> = {}): FakeNvml {
    const dir = mkdtempSync(join(tmpdir(), 'navarch-fake-nvml-'));
    const full: FakeNvmlConfig = { devices: defaultDevices(8), ...config };
    const fake = new FakeNvml(dir, full);
    if (Buffer.byteLength(fake.socketPath) > 107) {
      fake.cleanup();
      throw new Error(`fake-nvml: socket path longer than 107 bytes: ${fake.socketPath}`);
    }
    return fake;
  }

  /** Rewrites the config file; the library reads it at the next 0 -> 1 nvmlInit. */
  update(config: Partial<FakeNvmlConfig>): void {
    this.write({ devices: defaultDevices(8), ...config });
  }

  private write(config: FakeNvmlConfig): void {
    const full = { ...config, controlSocket: this.socketPath };
    writeFileSync(this.configPath, `${JSON.stringify(full, null, 2)}\n`);
  }

  env(): Record<string, string> {
    return { NAVARCH_NVML_LIBRARY: FAKE_NVML_LIB, NAVARCH_FAKE_NVML_CONFIG: this.configPath };
  }

  applyToProcess(): void {
    Object.assign(process.env, this.env());
  }

  /** One request over the control socket; rejects when the reply has ok:false. */
  async inject(req: object, opts: InjectOptions = {}): Promise<Record<string, unknown>> {
    const connectDeadline = Date.now() + (opts.connectTimeoutMs ?? 10_000);
    let delay = 10;
    for (;;) {
      let reply: Record<string, unknown>;
      try {
        reply = await requestOnce(this.socketPath, req, opts.replyTimeoutMs ?? 30_000);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if ((code === 'ENOENT' || code === 'ECONNREFUSED') && Date.now() < connectDeadline) {
          await sleep(delay + Math.random() * delay);
          delay = Math.min(delay * 2, 200);
          continue;
        }
        if (code === 'ENOENT' || code === 'ECONNREFUSED') {
          throw new Error(`fake-nvml: control socket ${this.socketPath} not listening (is NVML initialised?)`);
        }
        throw e;
      }
      if (reply.ok !== true) {
        const op = (req as { op?: unknown }).op;
        throw new Error(`fake-nvml ${String(op)}: ${String(reply.error ?? 'request failed')}`);
      }
      return reply;
    }
  }

  async xid(device: number, code: number): Promise<void> {
    await this.inject({ op: 'xid', device, xid: code });
  }

  async lose(device: number): Promise<void> {
    await this.inject({ op: 'lost', device });
  }

  async recover(device: number): Promise<void> {
    await this.inject({ op: 'recover', device });
  }

  async set(device: number, field: FakeTelemetryField | string, value: number): Promise<void> {
    await this.inject({ op: 'set', device, field, value });
  }

  /** Counters of the fake: events queued now, waits entered, events recorded/dropped, live event sets. */
  async stats(): Promise<FakeNvmlStats> {
    return (await this.inject({ op: 'stats' })) as unknown as FakeNvmlStats;
  }

  cleanup(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function newestSourceMtime(dir: string): number {
  let newest = 0;
  for (const f of readdirSync(dir)) {
    if (/\.(c|h)$|^Makefile$/.test(f)) newest = Math.max(newest, statSync(join(dir, f)).mtimeMs);
  }
  return newest;
}

/** Builds the fake library when it is missing or older than its sources (for tests run directly). */
export function ensureFakeNvmlBuilt(): void {
  const srcDir = join(REPO_ROOT, 'native', 'fake-nvml');
  const fresh = (): boolean => existsSync(FAKE_NVML_LIB) && statSync(FAKE_NVML_LIB).mtimeMs >= newestSourceMtime(srcDir);
  if (fresh()) return;
  // Test files run in parallel forks: serialise the build with a lock directory.
  const lock = join(REPO_ROOT, 'build', '.fake-nvml.lock');
  mkdirSync(join(REPO_ROOT, 'build'), { recursive: true });
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      try {
        if (Date.now() - statSync(lock).mtimeMs > 120_000) rmdirSync(lock); // stale
      } catch {
        /* raced with the owner */
      }
      if (Date.now() > deadline) throw new Error(`fake-nvml: build lock ${lock} held for over 120 s`);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
  try {
    if (!fresh()) execFileSync('make', ['-s', '-C', srcDir], { stdio: ['ignore', 'inherit', 'inherit'], timeout: 120_000 });
  } finally {
    rmdirSync(lock);
  }
  if (!existsSync(FAKE_NVML_LIB)) throw new Error(`fake-nvml: build did not produce ${FAKE_NVML_LIB}`);
}
