#!/usr/bin/env node
/**
 * Extra bytes per ReportHealth for whole-state reports (src/controlplane/node-state.ts), needs
 * `npm run build`:
 *
 *   node bench/report-bytes.mjs [--faults 0,1,8,64,500] [--json]
 *
 * For a push of one new XID event while N other faults are active (half critical, half warning,
 * on 8 GPUs), the protobuf size of the ReportHealthRequest as the link builds it: the event
 * alone (before: no state), with the `navarch_agent` result (--verdict agent) and with the
 * active faults re-sent as events (--verdict policy, cap 64). Sizes are exact (toBinary), the
 * ratio is against the event-only push of the same run.
 */
import { parseArgs } from 'node:util';
import { create, toBinary } from '@bufbuild/protobuf';
import { ReportHealthRequestSchema } from '../dist/gen/navarch/control_plane_pb.js';
import { eventToProtoSafe, faultToProto, resultToProto } from '../dist/controlplane/wire.js';
import { wholeState } from '../dist/controlplane/node-state.js';

const { values } = parseArgs({ options: { faults: { type: 'string', default: '0,1,8,64,500' }, json: { type: 'boolean', default: false } } });
const counts = values.faults.split(',').map(Number);
const now = Date.UTC(2026, 11, 3, 12, 0, 0);

function fault(i) {
  const gpu = i % 8;
  const critical = i % 2 === 0;
  return {
    key: `gpu${gpu}/xid/${1000 + i}`,
    gpuIndex: gpu,
    gpuUuid: `GPU-0000000${gpu}-aaaa-bbbb-cccc-00000000000${gpu}`,
    type: 'xid',
    system: 'DRIVER',
    severity: critical ? 'critical' : 'warning',
    action: critical ? 'reboot' : 'none',
    message: `XID ${critical ? 79 : 31} on GPU ${gpu}: GPU has fallen off the bus`,
    metrics: { xid_code: critical ? '79' : '31' },
    sinceMs: now - 60_000,
    lastSeenMs: now - i,
    count: 1,
    lastEventId: `0mx7hnema-${String(i).padStart(4, '0')}-c19fdcaf`,
  };
}
const newEvent = {
  id: '0mx7hnema-9999-c19fdcaf',
  timeMs: now,
  type: 'xid',
  system: 'DRIVER',
  gpuIndex: 3,
  gpuUuid: 'GPU-00000003-aaaa-bbbb-cccc-000000000003',
  metrics: { xid_code: '79' },
  message: 'XID 79 on GPU 3: GPU has fallen off the bus',
  severity: 'critical',
  action: 'reboot',
  citation: 'bench',
  source: 'nvml',
  key: 'gpu3/xid/79',
  fault: 'raise',
  count: 1,
};

const size = (results, events) =>
  toBinary(ReportHealthRequestSchema, create(ReportHealthRequestSchema, { nodeId: 'node-a', results: results.map(resultToProto), events })).length;

const rows = [];
for (const n of counts) {
  const faults = [...Array.from({ length: n }, (_, i) => fault(i)), { ...fault(9999), key: newEvent.key, severity: 'critical' }];
  const ev = [eventToProtoSafe(newEvent)];
  const base = size([], ev);
  const a = wholeState('agent', faults, now);
  const p = wholeState('policy', faults, now, { skipKeys: new Set([newEvent.key]) });
  const agent = size(a.results, ev);
  const policy = size(p.results, [...p.faults.map(faultToProto), ...ev]);
  rows.push({
    activeFaults: n + 1,
    eventOnly: base,
    agent,
    agentExtra: agent - base,
    policy,
    policyExtra: policy - base,
    policyResent: p.faults.length,
    policyOmitted: p.omitted,
  });
}
if (values.json) console.log(JSON.stringify(rows));
else {
  console.log('active faults | event only (B) | agent (B) | +agent | x | policy (B) | +policy | x | re-sent / omitted');
  for (const r of rows) {
    console.log(
      `${r.activeFaults} | ${r.eventOnly} | ${r.agent} | +${r.agentExtra} | ${(r.agent / r.eventOnly).toFixed(2)} | ${r.policy} | +${r.policyExtra} | ${(r.policy / r.eventOnly).toFixed(2)} | ${r.policyResent} / ${r.policyOmitted}`,
    );
  }
}
