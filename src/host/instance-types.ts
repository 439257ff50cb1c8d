/**
 * How many GPUs (and which model) a cloud instance type carries. Used by backend selection
 * (an instance type with GPUs is a GPU host: never fall back to fake GPUs there) and by the
 * telemetry judge (`node/gpu_count`: fewer GPUs visible than the instance type should have).
 *
 * Only instance types whose GPU count is certain are listed; an unknown type yields null
 * ("no expectation"), never a guess.
 */

export interface InstanceGpuSpec {
  /** GPUs the instance type exposes to the guest. */
  gpus: number;
  /** Marketing name of the GPU model, for messages ("NVIDIA H100"). */
  model: string;
}

function family(model: string, sizes: Record<string, number>, prefix: string): Array<[string, InstanceGpuSpec]> {
  return Object.entries(sizes).map(([size, gpus]) => [`${prefix}.${size}`, { gpus, model }]);
}

const ENTRIES: Array<[string, InstanceGpuSpec]> = [
  // AWS
  ['p5.48xlarge', { gpus: 8, model: 'NVIDIA H100' }],
  ['p5.4xlarge', { gpus: 1, model: 'NVIDIA H100' }],
  ['p5e.48xlarge', { gpus: 8, model: 'NVIDIA H200' }],
  ['p5en.48xlarge', { gpus: 8, model: 'NVIDIA H200' }],
  ['p6-b200.48xlarge', { gpus: 8, model: 'NVIDIA B200' }],
  ['p4d.24xlarge', { gpus: 8, model: 'NVIDIA A100' }],
  ['p4de.24xlarge', { gpus: 8, model: 'NVIDIA A100' }],
  ['p3.2xlarge', { gpus: 1, model: 'NVIDIA V100' }],
  ['p3.8xlarge', { gpus: 4, model: 'NVIDIA V100' }],
  ['p3.16xlarge', { gpus: 8, model: 'NVIDIA V100' }],
  ['p3dn.24xlarge', { gpus: 8, model: 'NVIDIA V100' }],
  ...family('NVIDIA A10G', { xlarge: 1, '2xlarge': 1, '4xlarge': 1, '8xlarge': 1, '12xlarge': 4, '16xlarge': 1, '24xlarge': 4, '48xlarge': 8 }, 'g5'),
  ...family('NVIDIA L4', { xlarge: 1, '2xlarge': 1, '4xlarge': 1, '8xlarge': 1, '12xlarge': 4, '16xlarge': 1, '24xlarge': 4, '48xlarge': 8 }, 'g6'),
  ...family('NVIDIA L40S', { xlarge: 1, '2xlarge': 1, '4xlarge': 1, '8xlarge': 1, '12xlarge': 4, '16xlarge': 1, '24xlarge': 4, '48xlarge': 8 }, 'g6e'),
  ...family('NVIDIA T4', { xlarge: 1, '2xlarge': 1, '4xlarge': 1, '8xlarge': 1, '12xlarge': 4, '16xlarge': 1, metal: 8 }, 'g4dn'),
  // GCP (Navarch's default provider)
  ['a3-highgpu-1g', { gpus: 1, model: 'NVIDIA H100' }],
  ['a3-highgpu-2g', { gpus: 2, model: 'NVIDIA H100' }],
  ['a3-highgpu-4g', { gpus: 4, model: 'NVIDIA H100' }],
  ['a3-highgpu-8g', { gpus: 8, model: 'NVIDIA H100' }],
  ['a3-megagpu-8g', { gpus: 8, model: 'NVIDIA H100' }],
  ['a3-ultragpu-8g', { gpus: 8, model: 'NVIDIA H200' }],
  ['a2-highgpu-1g', { gpus: 1, model: 'NVIDIA A100' }],
  ['a2-highgpu-2g', { gpus: 2, model: 'NVIDIA A100' }],
  ['a2-highgpu-4g', { gpus: 4, model: 'NVIDIA A100' }],
  ['a2-highgpu-8g', { gpus: 8, model: 'NVIDIA A100' }],
  ['a2-megagpu-16g', { gpus: 16, model: 'NVIDIA A100' }],
  ['a2-ultragpu-1g', { gpus: 1, model: 'NVIDIA A100 80GB' }],
  ['a2-ultragpu-2g', { gpus: 2, model: 'NVIDIA A100 80GB' }],
  ['a2-ultragpu-4g', { gpus: 4, model: 'NVIDIA A100 80GB' }],
  ['a2-ultragpu-8g', { gpus: 8, model: 'NVIDIA A100 80GB' }],
  ['g2-standard-4', { gpus: 1, model: 'NVIDIA L4' }],
  ['g2-standard-8', { gpus: 1, model: 'NVIDIA L4' }],
  ['g2-standard-12', { gpus: 1, model: 'NVIDIA L4' }],
  ['g2-standard-16', { gpus: 1, model: 'NVIDIA L4' }],
  ['g2-standard-24', { gpus: 2, model: 'NVIDIA L4' }],
  ['g2-standard-32', { gpus: 1, model: 'NVIDIA L4' }],
  ['g2-standard-48', { gpus: 4, model: 'NVIDIA L4' }],
  ['g2-standard-96', { gpus: 8, model: 'NVIDIA L4' }],
];

/** The table, keyed by lower-case instance type. */
export const INSTANCE_TYPE_GPUS: ReadonlyMap<string, InstanceGpuSpec> = new Map(ENTRIES);

/** GPUs of an instance type, or null when the type is unknown (or empty). Case-insensitive. */
export function instanceTypeGpus(instanceType: string | undefined | null): InstanceGpuSpec | null {
  if (!instanceType) return null;
  return INSTANCE_TYPE_GPUS.get(instanceType.trim().toLowerCase()) ?? null;
}
