/**
 * Backend selection. `NAVARCH_FAKE_GPU=true` (exact string, as in Navarch) or mode 'fake' ->
 * fake GPUs. Mode 'nvml' -> NVML or a hard error. Mode 'auto' -> NVML when it opens; when it does
 * not, fake GPUs ONLY on a host with no sign of NVIDIA hardware. On a GPU host (NVIDIA PCI display
 * devices, /dev/nvidia* nodes, or a GPU instance type) a broken NVML is reported, never hidden:
 * the `none` backend plus a critical driver_error health event.
 */
import type { HealthEventInput } from '../events/types.js';
import { nodeKey } from '../events/fault-key.js';
import { detectGpuHost, type GpuHostEvidence } from '../host/detect.js';
import type { NvmlErrorInfo } from '../nvml/types.js';
import { FakeBackend, fakeOptionsFromEnv } from './fake.js';
import { NoneBackend } from './none.js';
import { describeNvmlError, NvmlBackend, nvmlErrorInfo, type NvmlBackendOptions } from './nvml.js';
import { loadScenario, runScenario, type Scenario, type ScenarioEvent, type ScenarioRun } from './scenario.js';
import type { GpuBackend } from './types.js';

export type BackendMode = 'auto' | 'nvml' | 'fake';

export interface SelectOptions {
  mode: BackendMode;
  env?: Record<string, string | undefined>;
  instanceType?: string;
  /** Scenario file for the fake backend (rejected with the nvml backend). */
  scenarioFile?: string;
  /** Root for GPU-host detection (sysfs, /dev); default "/". */
  sysRoot?: string;
  nvml?: NvmlBackendOptions;
  /** Seed of the fake backend's telemetry. */
  fakeSeed?: number;
  /** Start the scenario right away (default true). The run is returned as `scenario`. */
  startScenario?: boolean;
  /** Called for each scenario fault injected, and for one that failed at run time. */
  scenarioHooks?: { onInject?: (ev: ScenarioEvent) => void; onError?: (err: Error, ev: ScenarioEvent) => void };
  now?: () => number;
}

export interface SelectResult {
  backend: GpuBackend;
  /** Loud, one-line warnings the caller must log (at warn or error level). */
  warnings: string[];
  /** On a GPU host whose NVML fails: the node-level driver_error event to record. */
  driverError?: HealthEventInput;
  /** What detection found (only when auto mode had to decide after an NVML failure). */
  evidence?: GpuHostEvidence;
  /** The loaded scenario and its run (fake backend with a scenario file). */
  scenario?: { scenario: Scenario; run: ScenarioRun | null };
}

export class BackendSelectionError extends Error {
  override name = 'BackendSelectionError';
  constructor(
    message: string,
    readonly nvmlError?: NvmlErrorInfo,
  ) {
    super(message);
  }
}

async function openFake(opts: SelectOptions, reason: string, warnings: string[]): Promise<SelectResult> {
  const env = opts.env ?? process.env;
  const { count, model } = fakeOptionsFromEnv(env);
  const fakeOpts: ConstructorParameters<typeof FakeBackend>[0] = { count, model, reason };
  if (opts.fakeSeed !== undefined) fakeOpts.seed = opts.fakeSeed;
  if (opts.now) fakeOpts.now = opts.now;
  const backend = new FakeBackend(fakeOpts);
  await backend.open();
  const result: SelectResult = { backend, warnings };
  if (opts.scenarioFile) {
    const scenario = await loadScenario(opts.scenarioFile, { gpuCount: count, nvlinkCount: backend.nvlinkCount });
    const run =
      opts.startScenario === false
        ? null
        : runScenario(backend, scenario, {
            clock: { setTimeout: (fn, ms) => backend.schedule(ms, fn), clearTimeout: (h) => backend.cancel(h) },
            ...(opts.scenarioHooks?.onInject ? { onInject: opts.scenarioHooks.onInject } : {}),
            ...(opts.scenarioHooks?.onError ? { onError: opts.scenarioHooks.onError } : {}),
          });
    result.scenario = { scenario, run };
  }
  return result;
}

/** The driver_error event for a GPU host whose NVML does not open. */
export function driverErrorEvent(info: NvmlErrorInfo, evidence: GpuHostEvidence, timeMs: number): HealthEventInput {
  const metrics: Record<string, string> = {
    nvml_error: info.code,
    nvml_status: String(info.status),
    nvidia_pci_devices: String(evidence.nvidiaPciDevices.length),
    nvidia_device_nodes: String(evidence.gpuDeviceNodes.length),
  };
  if (info.fn) metrics.nvml_function = info.fn;
  if (evidence.instanceType) {
    metrics.instance_type = evidence.instanceType.name;
    metrics.expected_gpu_count = String(evidence.instanceType.spec.gpus);
  }
  return {
    type: 'driver_error',
    system: 'DRIVER',
    gpuIndex: -1,
    gpuUuid: '',
    metrics,
    message: `NVML failed: ${describeNvmlError(info)} on a host with ${evidence.summary}`,
    timeMs,
    severity: 'critical',
    action: 'reboot',
    citation:
      'navarch-agent: NVML cannot initialise on a host with NVIDIA GPUs (driver not loaded, version mismatch or permissions); a reboot reloads the driver',
    source: 'agent',
    key: nodeKey('driver_error'),
    fault: 'raise',
  };
}

export async function selectBackend(opts: SelectOptions): Promise<SelectResult> {
  const env = opts.env ?? process.env;
  const warnings: string[] = [];
  if (!['auto', 'nvml', 'fake'].includes(opts.mode)) {
    throw new BackendSelectionError(`backend mode: expected auto, nvml or fake, got "${String(opts.mode)}"`);
  }
  if (env.NAVARCH_FAKE_GPU === 'true' || opts.mode === 'fake') {
    const reason = env.NAVARCH_FAKE_GPU === 'true' ? 'NAVARCH_FAKE_GPU=true' : 'fake backend requested';
    if (opts.mode === 'nvml' && env.NAVARCH_FAKE_GPU === 'true') warnings.push('NAVARCH_FAKE_GPU=true overrides the nvml backend mode');
    return openFake(opts, reason, warnings);
  }
  if (opts.mode === 'nvml' && opts.scenarioFile) {
    throw new BackendSelectionError(`${opts.scenarioFile}: a scenario needs the fake backend, not nvml`);
  }

  const nvmlOpts: NvmlBackendOptions = { ...opts.nvml };
  if (nvmlOpts.libraryPath === undefined && env.NAVARCH_NVML_LIBRARY) nvmlOpts.libraryPath = env.NAVARCH_NVML_LIBRARY;
  const nvml = new NvmlBackend(nvmlOpts);
  let failure: NvmlErrorInfo;
  try {
    await nvml.open();
    if (opts.scenarioFile) warnings.push(`${opts.scenarioFile}: scenario ignored: NVML opened, scenarios only drive the fake backend`);
    return { backend: nvml, warnings };
  } catch (err) {
    failure = nvmlErrorInfo(err);
  }

  if (opts.mode === 'nvml') {
    throw new BackendSelectionError(`nvml backend: NVML failed: ${describeNvmlError(failure)}: ${failure.message}`, failure);
  }

  const evidence = await detectGpuHost({ sysRoot: opts.sysRoot ?? '/', instanceType: opts.instanceType ?? null });
  const timeMs = (opts.now ?? Date.now)();
  if (evidence.isGpuHost) {
    const driverError = driverErrorEvent(failure, evidence, timeMs);
    const reason = driverError.message;
    warnings.push(`${reason}: NOT falling back to fake GPUs; reporting no GPUs and a critical driver_error (${failure.message})`);
    if (opts.scenarioFile) warnings.push(`${opts.scenarioFile}: scenario ignored: this is a GPU host`);
    return { backend: new NoneBackend(reason), warnings, driverError, evidence };
  }
  const reason = `NVML unavailable (${describeNvmlError(failure)}) and no NVIDIA hardware on this host: fake GPUs`;
  warnings.push(`${reason}; set NAVARCH_FAKE_GPU=true or --gpu-backend fake to make this explicit`);
  const result = await openFake(opts, reason, warnings);
  result.evidence = evidence;
  return result;
}
