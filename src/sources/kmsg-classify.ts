/**
 * Kernel-log records -> health events: NVRM XID lines (with the catalog and the NVLink5 decoder),
 * the XID-less faults (fallen off the bus, RmInitAdapter), GSP errors, NVSwitch SXid headlines,
 * and the lost-records warning for a gap in the sequence numbers. Pure apart from the GPU
 * resolver it is given; it learns PCI id -> UUID from the driver's own lines (bounded).
 */
import type { Logger } from 'pino';
import type { HealthEventInput } from '../events/types.js';
import { gpuOrNodeKey, nodeKey, nodeKeyAtPci } from '../events/fault-key.js';
import { xidEventInput } from '../xid/catalog.js';
import { parseSxidLine, sxidEventInput } from '../xid/sxid.js';
import { parseNvrmLine, type KmsgRecord } from './kmsg-parse.js';

export type GpuResolver = (pciShort: string) => { index: number; uuid: string } | null;

const MAX_UUID_MAP = 512;

export class KmsgClassifier {
  private readonly uuidByPci = new Map<string, string>();
  nvrmLines = 0;
  xids = 0;

  constructor(
    private readonly bootMs: number,
    private readonly resolveGpu: GpuResolver | undefined,
    private readonly log: Logger | undefined,
  ) {}

  /** UUID learnt from `NVRM: GPU at PCI:...: GPU-...` lines. */
  uuidForPci(pciShort: string): string | undefined {
    return this.uuidByPci.get(pciShort);
  }

  private timeOf(rec: KmsgRecord): number {
    return Math.round(this.bootMs + rec.usecSinceBoot / 1000);
  }

  /** The events of one record (none for most kernel lines). `historical`: read from the backlog of a first run. */
  eventsFor(rec: KmsgRecord, historical: boolean): HealthEventInput[] {
    const line = parseNvrmLine(rec.message);
    if (!line) return this.sxidEventsFor(rec, historical);
    this.nvrmLines++;
    const timeMs = this.timeOf(rec);
    if (line.kind === 'gpu_uuid') {
      if (this.uuidByPci.size >= MAX_UUID_MAP && !this.uuidByPci.has(line.pciShort)) {
        const first = this.uuidByPci.keys().next().value;
        if (first !== undefined) this.uuidByPci.delete(first);
      }
      this.uuidByPci.set(line.pciShort, line.uuid);
      return [];
    }
    const gpu = this.resolve(line.pciShort);
    const common = (ev: HealthEventInput): HealthEventInput => {
      ev.metrics.pci_bus_id = line.pciShort;
      ev.metrics.kmsg_seq = rec.seq.toString();
      if (historical) ev.metrics.replayed = 'true';
      if (line.kind === 'xid' && line.gpuInstance !== undefined) ev.metrics.gpu_instance_id = String(line.gpuInstance);
      if (line.kind === 'xid' && line.computeInstance !== undefined) ev.metrics.compute_instance_id = String(line.computeInstance);
      if (gpu.index < 0) ev.key = nodeKeyAtPci(ev.key, line.pciShort);
      return ev;
    };
    if (line.kind === 'fallen_off_bus') {
      // No XID number on the line: reported as the XID 79 it is, plus the GPU-lost fault.
      const x79 = xidEventInput({
        code: 79,
        gpuIndex: gpu.index,
        gpuUuid: gpu.uuid,
        timeMs,
        source: 'kmsg',
        message: `GPU has fallen off the bus (kernel log, no XID number: ${line.form}-line form)`,
      });
      x79.metrics.xid_derived = 'fallen_off_bus';
      return [common(x79), common(driverEvent('gpu_lost', gpu, timeMs, line.pciShort, 'GPU has fallen off the bus', 'reboot'))];
    }
    if (line.kind === 'init_failed') {
      const detail = line.detail ? ` ${line.detail}` : '';
      return [common(driverEvent('init_failed', gpu, timeMs, line.pciShort, `RmInitAdapter failed${detail}: the driver could not bring the GPU up`, 'reboot'))];
    }
    this.xids++;
    const out = [
      common(
        xidEventInput({
          code: line.code,
          gpuIndex: gpu.index,
          gpuUuid: gpu.uuid,
          timeMs,
          source: 'kmsg',
          message: line.detail,
          ...(line.pid !== undefined ? { pid: line.pid } : {}),
          ...(line.processName !== undefined ? { processName: line.processName } : {}),
        }),
      ),
    ];
    if (line.code === 119 || line.code === 120) {
      const what = line.code === 119 ? 'GSP RPC timeout' : 'GSP error';
      const ev = driverEvent('gsp', gpu, timeMs, line.pciShort, `${what} (XID ${line.code}): NVML calls to this GPU may block`, 'reset_gpu');
      ev.metrics.xid_code = String(line.code);
      out.push(common(ev));
    }
    return out;
  }

  /** A warning that the ring buffer overwrote records before they were read (an overrun or downtime). */
  lostRecordsEvent(from: bigint, to: bigint, lost: number, rec: KmsgRecord): HealthEventInput {
    return {
      type: 'driver_error',
      system: 'DRIVER',
      gpuIndex: -1,
      gpuUuid: '',
      metrics: { reason: 'kmsg_records_lost', lost_records: String(lost), first_seq: from.toString(), last_seq: to.toString() },
      message: `kernel log: ${lost} record(s) (seq ${from}..${to}) were overwritten before they were read; XIDs among them are lost`,
      timeMs: this.timeOf(rec),
      severity: 'warning',
      action: 'none',
      citation: '/dev/kmsg sequence numbers: a gap means the ring buffer dropped records (read returns EPIPE)',
      source: 'kmsg',
      key: nodeKey('kmsg_records_lost'),
      fault: 'none',
    };
  }

  /** NVSwitch SXid lines: the headline becomes an event; the Severity/Data follow-ups do not. */
  private sxidEventsFor(rec: KmsgRecord, historical: boolean): HealthEventInput[] {
    const sx = parseSxidLine(rec.message);
    if (!sx || sx.kind !== 'headline') return [];
    const ev = sxidEventInput(sx, this.timeOf(rec));
    ev.metrics.kmsg_seq = rec.seq.toString();
    if (historical) ev.metrics.replayed = 'true';
    return [ev];
  }

  private resolve(pciShort: string): { index: number; uuid: string } {
    let r: { index: number; uuid: string } | null = null;
    try {
      r = this.resolveGpu?.(pciShort) ?? null;
    } catch (e) {
      this.log?.warn({ err: (e as Error).message, pciShort }, 'kmsg source: GPU resolver threw');
    }
    if (r && Number.isInteger(r.index) && r.index >= 0) return { index: r.index, uuid: r.uuid || this.uuidByPci.get(pciShort) || '' };
    return { index: -1, uuid: this.uuidByPci.get(pciShort) ?? '' };
  }
}

function driverEvent(
  kind: 'gpu_lost' | 'gsp' | 'init_failed',
  gpu: { index: number; uuid: string },
  timeMs: number,
  pciShort: string,
  message: string,
  action: 'reboot' | 'reset_gpu',
): HealthEventInput {
  return {
    type: 'driver_error',
    system: 'DRIVER',
    gpuIndex: gpu.index,
    gpuUuid: gpu.uuid,
    metrics: { reason: kind === 'gpu_lost' ? 'fallen_off_bus' : kind === 'gsp' ? 'gsp' : 'rm_init_adapter' },
    message: `GPU ${pciShort}: ${message}`,
    timeMs,
    severity: 'critical',
    action,
    citation:
      kind === 'gpu_lost'
        ? 'kernel log "GPU has fallen off the bus" (XID 79, NVIDIA: RESTART_BM)'
        : kind === 'gsp'
          ? 'NVIDIA XID catalog: 119/120 RESET_GPU; DCGM stops calling the driver after a kernel-log XID 119'
          : 'kernel log "RmInitAdapter failed": the GPU is unusable (like XID 143 GPU_INIT_ERROR; gpud: NVML init error Unhealthy, REBOOT_SYSTEM); a driver without a handle cannot reset it, so reboot',
    source: 'kmsg',
    key: gpuOrNodeKey(gpu.index, kind),
    fault: 'raise',
  };
}
