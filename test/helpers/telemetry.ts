/**
 * Telemetry of a healthy, busy H100 for the judges' tests (retired-page counters unknown, as on a
 * GPU with row remapping), and its NVLink list.
 */
import type { NvLinkStatus, Telemetry } from '../../src/nvml/types.js';

export function healthyLinks(n: number, over: (link: number) => Partial<NvLinkStatus> = () => ({})): NvLinkStatus[] {
  return Array.from({ length: n }, (_, link) => ({
    link,
    active: true,
    replayErrors: 0,
    recoveryErrors: 0,
    crcFlitErrors: 0,
    crcDataErrors: 0,
    ...over(link),
  }));
}

export function healthyTelemetry(over: Partial<Telemetry> = {}): Telemetry {
  return {
    temperatureC: 50,
    powerUsageW: 450.5,
    powerLimitW: 700,
    gpuUtilPercent: 80,
    memUtilPercent: 40,
    memoryUsedBytes: 40e9,
    memoryTotalBytes: 85520809984,
    smClockMhz: 1980,
    memClockMhz: 2619,
    clockEventReasons: 0,
    performanceState: 0,
    fanSpeedPercent: null,
    persistenceMode: true,
    eccModeCurrent: true,
    eccModePending: true,
    eccVolatileCorrected: 0,
    eccVolatileUncorrected: 0,
    eccAggregateCorrected: 0,
    eccAggregateUncorrected: 0,
    retiredPagesSbe: null,
    retiredPagesDbe: null,
    retiredPagesPending: null,
    remappedRowsCorrected: 0,
    remappedRowsUncorrected: 0,
    remappedRowsPending: false,
    remappedRowsFailure: false,
    pcieReplayCounter: 0,
    pcieLinkGenCurrent: 5,
    pcieLinkGenMax: 5,
    pcieLinkWidthCurrent: 16,
    pcieLinkWidthMax: 16,
    nvlinks: healthyLinks(18),
    ...over,
  };
}
