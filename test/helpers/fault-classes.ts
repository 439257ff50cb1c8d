/**
 * One event of every fault class the agent raises, made by the agent's own producers (the
 * telemetry judge, the NVML event classifier, the backend selector's driver error, the kernel-log
 * source over a file, the SXid parser), never written by hand. The class names are the rows of the
 * table in docs/controlplane.md ("Fault classes in Navarch's vocabulary").
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { driverErrorEvent } from '../../src/backends/select.js';
import type { ActiveFault, HealthEvent, HealthEventInput } from '../../src/events/types.js';
import type { GpuFabricInfo, NvmlErrorCode, NvmlEvent, NvmlEventType, Telemetry } from '../../src/nvml/types.js';
import { KmsgSource } from '../../src/sources/kmsg.js';
import { formatKmsgRecord, parseKmsgRecord } from '../../src/sources/kmsg-parse.js';
import { KmsgClassifier } from '../../src/sources/kmsg-classify.js';
import { classifyNvmlEvent } from '../../src/sources/nvml-events.js';
import { judgeFabricManager } from '../../src/sources/fabric-manager.js';
import { parseFabricManagerLine } from '../../src/sources/fabric-manager-log.js';
import { DEFAULT_TELEMETRY_CONFIG, judgeSnapshot, type JudgeState, type TelemetryConfig } from '../../src/sources/telemetry.js';
import { parseSxidLine, sxidEventInput } from '../../src/xid/sxid.js';
import { xidEventInput } from '../../src/xid/catalog.js';
import { RebootHistory, emptyHistory } from '../../src/xid/reboot-escalation.js';
import { healthyLinks, healthyTelemetry } from './telemetry.js';

const T0 = 1_700_000_000_000;

const links = healthyLinks;

/** A healthy, busy H100 at 50 C, with page-retirement counters at 0. */
function tel(over: Partial<Telemetry> = {}): Telemetry {
  return healthyTelemetry({ retiredPagesSbe: 0, retiredPagesDbe: 0, retiredPagesPending: false, ...over });
}

type Sample = Array<{ index: number; t: Telemetry } | { index: number; error: NvmlErrorCode }>;

/** The raises of the judge's last step, over samples of GPUs 10 s apart. */
function judged(samples: Sample[], config: Partial<TelemetryConfig> = {}): HealthEventInput[] {
  let state: JudgeState | null = null;
  let last: HealthEventInput[] = [];
  samples.forEach((devs, i) => {
    const at = T0 + i * 10_000;
    const snap = devs.map((d) =>
      'error' in d
        ? {
            index: d.index,
            uuid: `GPU-${d.index}`,
            ok: false as const,
            error: { code: d.error, status: d.error === 'NVML_CALL_TIMEOUT' ? -1 : 999, fn: 'nvmlDeviceGetTemperature', message: d.error },
            takenAtMs: at,
          }
        : { index: d.index, uuid: `GPU-${d.index}`, ok: true as const, telemetry: d.t, takenAtMs: at },
    );
    const r = judgeSnapshot(state, snap, { ...DEFAULT_TELEMETRY_CONFIG, ...config }, at);
    state = r.state;
    last = r.events;
  });
  return last.filter((e) => e.fault === 'raise');
}

/** GPU 0 healthy, then `then` (several times for rate-based conditions). */
function gpu0(then: Partial<Telemetry>, times = 1): HealthEventInput[] {
  return judged([[{ index: 0, t: tel() }], ...Array.from({ length: times }, () => [{ index: 0, t: tel(then) }])]);
}

function nvml(type: NvmlEventType, data = 0, count = 1): HealthEventInput {
  const ev: NvmlEvent = {
    type,
    eventTypeMask: 0,
    data,
    deviceIndex: 0,
    uuid: 'GPU-0',
    pciBusId: '00000000:41:00.0',
    gpuInstanceId: null,
    computeInstanceId: null,
    monotonicNs: 0n,
    wallTimeMs: T0,
    count,
  };
  const input = classifyNvmlEvent(ev);
  if (!input) throw new Error(`no event for NVML ${type}`);
  return input;
}

/** The events the kernel-log source makes of `lines`, read from a file. */
async function kmsg(lines: string[]): Promise<HealthEventInput[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fault-classes-'));
  try {
    const file = path.join(dir, 'kmsg');
    fs.writeFileSync(file, lines.map((message, i) => formatKmsgRecord({ level: 3, seq: i + 1, usecSinceBoot: (i + 1) * 1_000_000, message })).join(''));
    const got: HealthEventInput[] = [];
    const src = new KmsgSource({
      path: file,
      bootId: 'fault-classes',
      bootTimeMs: T0,
      pollMinMs: 5,
      pollMaxMs: 20,
      resolveGpu: () => ({ index: 0, uuid: 'GPU-0' }),
      onEvent: (e) => void got.push(e),
    });
    await src.start();
    try {
      await src.waitBacklog();
      // The lost-records warning needs a sequence gap on /dev/kmsg itself; the source's classifier
      // (src/sources/kmsg-classify.ts, the builder the source calls on a gap) makes it.
      const rec = parseKmsgRecord(formatKmsgRecord({ level: 3, seq: 10, usecSinceBoot: 10_000_000, message: 'after the gap' }));
      if (!rec) throw new Error('formatKmsgRecord made a record parseKmsgRecord rejects');
      const lost = new KmsgClassifier(T0, undefined, undefined).lostRecordsEvent(5n, 9n, 5, rec);
      return [...got, lost];
    } finally {
      await src.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function one(evs: HealthEventInput[], keyEnd: string, cls: string): HealthEventInput {
  const hit = evs.filter((e) => e.key.endsWith(keyEnd));
  if (hit.length !== 1) throw new Error(`${cls}: expected one event with key ...${keyEnd}, got ${JSON.stringify(evs.map((e) => e.key))}`);
  return hit[0] as HealthEventInput;
}

export interface FaultClassEvent {
  /** The row's name in docs/controlplane.md. */
  cls: string;
  input: HealthEventInput;
}

const FABRIC_OK: GpuFabricInfo = { version: 3, state: 3, status: 0, cliqueId: 1, clusterUuid: '0'.repeat(32), healthMask: 0, healthSummary: 1 };
/** GPU 0's fabric info, an hour after boot (past the registration grace). */
const fabric = (over: Partial<GpuFabricInfo>): HealthEventInput[] =>
  judged([[{ index: 0, t: tel({ fabric: { ...FABRIC_OK, ...over } }) }]], { bootTimeMs: T0 - 3_600_000 });

/** The fabric manager judge, an hour after boot, on a host with NVSwitches. */
function fabricManager(service: 'active' | 'failed', lines: string[] = []): HealthEventInput[] {
  const errors = lines.map((l) => parseFabricManagerLine(l)).filter((e) => e !== null);
  return judgeFabricManager(null, { nowMs: T0, sinceBootMs: 3_600_000, service: { state: service, detail: service }, errors }).events;
}

const xid = (code: number): HealthEventInput => xidEventInput({ code, gpuIndex: 0, gpuUuid: 'GPU-0', timeMs: T0, source: 'nvml' });

/** `input` as reboot-aware escalation rates it when it comes back after `reboots` reboots (src/xid/reboot-escalation.ts). */
function afterReboots(input: HealthEventInput, reboots: number): HealthEventInput {
  let data = emptyHistory();
  let out = input;
  for (let b = 0; b <= reboots; b++) {
    const h = new RebootHistory(data, `boot-${b}`, T0 + b * 3_600_000);
    out = h.observe(input, T0 + b * 3_600_000).input;
    data = h.toJSON();
  }
  return out;
}

/** One event per fault class, in the doc table's order. */
export async function faultClassEvents(): Promise<FaultClassEvent[]> {
  const slow = (mask: number) => gpu0({ clockEventReasons: mask }, 6);
  const kl = await kmsg([
    'NVRM: GPU 0000:41:00.0: GPU has fallen off the bus.',
    'NVRM: Xid (PCI:0000:41:00): 119, pid=2024380, name=nvidia-smi, Timeout after 6s of waiting for RPC response from GPU0 GSP!',
    'NVRM: GPU 0000:41:00.0: RmInitAdapter failed! (0x62:0x65:1792)',
  ]);
  const sx = (line: string) => {
    const l = parseSxidLine(line);
    if (!l) throw new Error(`not an SXid line: ${line}`);
    return sxidEventInput(l, T0);
  };
  const out: FaultClassEvent[] = [
    { cls: 'XID 79, critical, in the default fatal list', input: xid(79) },
    { cls: 'XID 109, critical, not in the list', input: xid(109) },
    { cls: 'XID 13, warning, in the list', input: xid(13) },
    { cls: 'XID 8, warning, not in the list', input: xid(8) },
    { cls: 'XID 154, info', input: xid(154) },
    { cls: 'XID back after 2 reboots (escalated to replace)', input: afterReboots(xid(109), 2) },
    {
      cls: 'GPU lost (NVML_ERROR_GPU_IS_LOST on a call)',
      input: one(judged([[{ index: 0, t: tel() }], [{ index: 0, error: 'NVML_ERROR_GPU_IS_LOST' }]]), 'xid/79', 'lost'),
    },
    { cls: 'GPU lost (NVML event)', input: nvml('gpu_lost') },
    {
      cls: 'GPU gone from the device list',
      input: one(
        judged([
          [
            { index: 0, t: tel() },
            { index: 1, t: tel() },
          ],
          [{ index: 0, t: tel() }],
        ]),
        'xid/79',
        'gone',
      ),
    },
    { cls: 'fewer GPUs than the instance type', input: one(judged([[{ index: 0, t: tel() }]], { expectedGpuCount: 8 }), 'node/gpu_count', 'gpu_count') },
    { cls: 'NVML call failed on a GPU', input: one(judged([[{ index: 0, error: 'NVML_ERROR_UNKNOWN' }]]), 'driver_error', 'nvml failed') },
    { cls: 'NVML call timed out on a GPU', input: one(judged([[{ index: 0, error: 'NVML_CALL_TIMEOUT' }]]), 'driver_error', 'nvml timeout') },
    {
      cls: 'NVML missing on a GPU host',
      input: driverErrorEvent(
        { code: 'NVML_ERROR_LIBRARY_NOT_FOUND', status: 12, fn: 'nvmlInit_v2', message: 'libnvidia-ml.so.1: cannot open shared object file' },
        {
          nvidiaPciDevices: ['0000:41:00.0'],
          gpuDeviceNodes: ['nvidia0'],
          controlNode: true,
          instanceType: null,
          isGpuHost: true,
          summary: '1 NVIDIA PCI device',
        },
        T0,
      ),
    },
    { cls: 'kernel log: fallen off the bus', input: one(kl, 'gpu_lost', 'fallen off') },
    { cls: 'kernel log: GSP error (XID 119/120)', input: one(kl, 'gsp', 'gsp') },
    { cls: 'kernel log: RmInitAdapter failed', input: one(kl, 'init_failed', 'init') },
    { cls: 'kernel log: records lost', input: one(kl, 'kmsg_records_lost', 'lost records') },
    { cls: 'GPU unavailable (NVML event)', input: nvml('gpu_unavailable') },
    { cls: 'recovery action reset or reboot (NVML event)', input: nvml('gpu_recovery_action', 1) },
    { cls: 'recovery action drain P2P or IMEX (NVML event)', input: nvml('gpu_recovery_action', 3) },
    { cls: 'persistence mode off', input: one(gpu0({ persistenceMode: false }), 'persistence_mode', 'persistence') },
    { cls: 'thermal warning (85-94 C)', input: one(gpu0({ temperatureC: 88 }), 'thermal', 'thermal warning') },
    { cls: 'thermal critical (95 C and up)', input: one(gpu0({ temperatureC: 97 }), 'thermal', 'thermal critical') },
    { cls: 'HW slowdown', input: one(slow(0x8), 'hw_slowdown', 'hw slowdown') },
    { cls: 'HW thermal slowdown', input: one(slow(0x40), 'hw_thermal_slowdown', 'hw thermal') },
    { cls: 'SW thermal slowdown', input: one(slow(0x20), 'sw_thermal_slowdown', 'sw thermal') },
    { cls: 'HW power brake', input: one(slow(0x80), 'hw_power_brake', 'power brake') },
    { cls: 'power above the limit', input: one(gpu0({ powerUsageW: 800 }), 'power', 'power') },
    { cls: 'ECC uncorrectable (counters)', input: one(gpu0({ eccVolatileUncorrected: 2, eccAggregateUncorrected: 2 }), 'ecc_dbe', 'ecc dbe') },
    { cls: 'ECC uncorrectable (NVML event)', input: nvml('ecc_dbe') },
    {
      cls: 'ECC corrected rising, up to 100 in a sample',
      input: one(gpu0({ eccVolatileCorrected: 50, eccAggregateCorrected: 50 }), 'ecc_sbe_rate', 'sbe rate'),
    },
    {
      cls: 'ECC corrected rising, over 100 in a sample',
      input: one(gpu0({ eccVolatileCorrected: 500, eccAggregateCorrected: 500 }), 'ecc_sbe_rate', 'sbe rate high'),
    },
    { cls: 'ECC corrected (NVML event)', input: nvml('ecc_sbe') },
    { cls: 'ECC corrected storm (NVML event)', input: nvml('ecc_storm') },
    { cls: 'retired pages pending', input: one(gpu0({ retiredPagesPending: true }), 'retired_pages/pending', 'retired') },
    { cls: 'row remapping pending', input: one(gpu0({ remappedRowsPending: true }), 'remapped_rows/pending', 'remap pending') },
    { cls: 'row remapping failure', input: one(gpu0({ remappedRowsFailure: true, remappedRowsUncorrected: 3 }), 'remapped_rows/failure', 'remap failure') },
    { cls: 'DRAM retirement event (NVML event)', input: nvml('dram_retirement_event') },
    { cls: 'DRAM retirement failure (NVML event)', input: nvml('dram_retirement_failure') },
    { cls: 'non-fatal poison (NVML event)', input: nvml('non_fatal_poison') },
    { cls: 'fatal poison (NVML event)', input: nvml('fatal_poison') },
    { cls: 'PCIe replays rising', input: one(gpu0({ pcieReplayCounter: 50 }), 'pcie/replay', 'pcie replay') },
    { cls: 'PCIe link narrower than its max', input: one(gpu0({ pcieLinkWidthCurrent: 8 }), 'pcie/link_width', 'pcie width') },
    { cls: 'PCIe link gen below its max while busy', input: one(gpu0({ pcieLinkGenCurrent: 3 }), 'pcie/link_gen', 'pcie gen') },
    { cls: 'NVLink down', input: one(gpu0({ nvlinks: links(18, (l) => (l === 3 ? { active: false } : {})) }), 'nvlink/3', 'nvlink down') },
    { cls: 'NVLink errors rising', input: one(gpu0({ nvlinks: links(18, (l) => (l === 3 ? { replayErrors: 20 } : {})) }), 'nvlink/3/errors', 'nvlink errors') },
    { cls: 'NVSwitch SXid, fatal', input: sx('nvidia-nvswitch1: SXid (PCI:0000:06:00.0): 20034, Fatal, Link 48 LTSSM Fault Up') },
    { cls: 'NVSwitch SXid, non-fatal', input: sx('nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)') },
    { cls: 'fabric registration not completed after the boot grace', input: one(fabric({ state: 2 }), 'fabric/state', 'fabric state') },
    { cls: 'fabric registration failed (probe status)', input: one(fabric({ status: 27 }), 'fabric/status', 'fabric status') },
    { cls: 'fabric health unhealthy', input: one(fabric({ healthSummary: 2 }), 'fabric/health', 'fabric unhealthy') },
    { cls: 'fabric health limited capacity', input: one(fabric({ healthSummary: 3 }), 'fabric/health', 'fabric limited') },
    { cls: 'fabric bandwidth degraded (health mask)', input: one(fabric({ healthMask: 1 }), 'fabric/degraded_bandwidth', 'fabric bandwidth') },
    { cls: 'fabric route recovery in progress (health mask)', input: one(fabric({ healthMask: 1 << 2 }), 'fabric/route_recovery', 'fabric route recovery') },
    { cls: 'fabric route unhealthy (health mask)', input: one(fabric({ healthMask: 1 << 4 }), 'fabric/route_unhealthy', 'fabric route unhealthy') },
    {
      cls: 'fabric access-timeout recovery in progress (health mask)',
      input: one(fabric({ healthMask: 1 << 6 }), 'fabric/access_timeout_recovery', 'fabric access timeout'),
    },
    {
      cls: 'fabric configuration incorrect (health mask)',
      input: one(fabric({ healthMask: 5 << 8 }), 'fabric/incorrect_configuration', 'fabric configuration'),
    },
    { cls: 'nvidia-fabricmanager not active on an NVSwitch host', input: one(fabricManager('failed'), 'node/fabric_manager', 'fabric manager') },
    {
      cls: 'nvidia-fabricmanager logged an error',
      input: one(
        fabricManager('active', [
          '[Feb 27 2025 15:10:02] [ERROR] [tid 12727] detected NVSwitch non-fatal error 12028 on fid 0 on NVSwitch pci bus id 00000000:86:00.0 physical id 3 port 61',
        ]),
        'fabric_manager/log',
        'fabric manager log',
      ),
    },
  ];
  return out;
}

/** A stored event as the store would keep it. */
export function storedEvent(input: HealthEventInput, id = 'e1'): HealthEvent {
  return { ...input, id, count: input.count ?? 1, firstTimeMs: input.timeMs, lastTimeMs: input.timeMs };
}

/** The active fault a raise leaves in the store (what --verdict policy re-sends). */
export function activeFault(input: HealthEventInput, id = 'e1'): ActiveFault {
  return {
    key: input.key,
    gpuIndex: input.gpuIndex,
    gpuUuid: input.gpuUuid,
    type: input.type,
    system: input.system,
    severity: input.severity,
    action: input.action,
    message: input.message,
    metrics: input.metrics,
    sinceMs: input.timeMs,
    lastSeenMs: input.timeMs,
    count: input.count ?? 1,
    lastEventId: id,
  };
}
