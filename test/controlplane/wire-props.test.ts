/** Properties of the agent -> protobuf conversions (fast-check). */
import { toBinary, fromBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { HealthEvent } from '../../src/events/types.js';
import { HealthEventSchema } from '../../src/gen/navarch/control_plane_pb.js';
import { eventToProto, INTEGER_POLICY_KEYS, plainInteger } from '../../src/controlplane/wire.js';
import { parseMetricValue } from '../../src/devcp/policy.js';

const TYPES = ['unknown', 'xid', 'thermal', 'power', 'memory', 'nvlink', 'pcie', 'driver_error', 'ecc_sbe', 'ecc_dbe'] as const;
const SYSTEMS = ['UNKNOWN', 'PCIE', 'NVLINK', 'PMU', 'MCU', 'MEM', 'SM', 'INFOROM', 'THERMAL', 'POWER', 'DRIVER', 'NVSWITCH'] as const;

const metricValue = fc.oneof(
  fc.integer({ min: -1_000_000, max: 1_000_000 }).map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 }).map((d) => d.toFixed(3)),
  fc.integer({ min: 0, max: 200 }).map((n) => ` ${n} `),
  fc.constantFrom('1e21', '-2.5e22', '+79', '0x4F', 'NaN', 'Infinity'),
  fc.string({ maxLength: 8 }),
);

const event = fc.record({
  type: fc.constantFrom(...TYPES),
  system: fc.constantFrom(...SYSTEMS),
  gpuIndex: fc.oneof(fc.integer({ min: -5, max: 64 }), fc.constant(Number.NaN)),
  gpuUuid: fc.string({ maxLength: 40 }),
  metrics: fc.dictionary(fc.constantFrom(...INTEGER_POLICY_KEYS, 'power_watts', 'count', 'note'), metricValue),
  message: fc.string({ maxLength: 60 }),
  timeMs: fc.integer({ min: 0, max: 4_000_000_000_000 }),
  count: fc.integer({ min: 1, max: 1_000_000 }),
  id: fc.string({ minLength: 1, maxLength: 20 }),
});

describe('eventToProto', () => {
  it('round-trips through the binary codec with explicit gpu_index and integer policy keys', () => {
    fc.assert(
      fc.property(event, (e) => {
        const ev = {
          ...e,
          severity: 'warning',
          action: 'none',
          citation: '',
          source: 'fake',
          key: 'k',
          fault: 'none',
          firstTimeMs: e.timeMs,
          lastTimeMs: e.timeMs,
        } as HealthEvent;
        const pb = fromBinary(HealthEventSchema, toBinary(HealthEventSchema, eventToProto(ev)));
        const expectIndex = Number.isInteger(e.gpuIndex) && e.gpuIndex >= 0 ? e.gpuIndex : -1;
        expect(pb.gpuIndex).toBe(expectIndex);
        expect(Number(pb.timestamp!.seconds) * 1000 + pb.timestamp!.nanos / 1e6).toBe(e.timeMs);
        for (const k of INTEGER_POLICY_KEYS) {
          const v = e.metrics[k];
          if (v === undefined) continue;
          const n = Number(v.trim());
          if (v.trim() !== '' && Number.isFinite(n)) {
            // Navarch's ParseInt accepts it: a plain base-10 integer.
            expect(pb.metrics[k]).toMatch(/^-?\d+$/);
            // Go's ParseInt takes int64 (CEL int); a larger integer falls through to ParseFloat (double).
            const i = BigInt(Math.trunc(n) || 0);
            expect(parseMetricValue(pb.metrics[k]!)).toBe(i >= -(2n ** 63n) && i < 2n ** 63n ? i : Number(i));
          } else {
            expect(pb.metrics[k]).toBe(v);
          }
        }
        // Extras never override what the source set.
        if (e.metrics.count !== undefined) expect(pb.metrics.count).toBe(e.metrics.count);
        else expect(pb.metrics.count).toBe(String(e.count));
        expect(pb.metrics.event_id).toBe(e.id);
      }),
      { numRuns: 300 },
    );
  });

  it('plainInteger is idempotent and only rewrites numbers', () => {
    fc.assert(
      fc.property(metricValue, (v) => {
        const once = plainInteger(v);
        expect(plainInteger(once)).toBe(once);
        if (!Number.isFinite(Number(v.trim())) || v.trim() === '') expect(once).toBe(v);
      }),
    );
  });
});
