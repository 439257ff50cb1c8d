/**
 * Wire test: a raw HTTP server on loopback captures the bytes the client sends; they are decoded
 * with two independent decoders (protobufjs reading proto/navarch/control_plane.proto, and a
 * hand-written tag walker) and every field number is checked.
 */
import * as http from 'node:http';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { afterEach, describe, expect, it } from 'vitest';
import { inventory, makeLink, waitFor } from './fixtures.js';
import { xidInput } from './memory-store.js';

const PROTO = fileURLToPath(new URL('../../proto/navarch/control_plane.proto', import.meta.url));
const root = protobuf.loadSync(PROTO);
const T = (n: string): protobuf.Type => root.lookupType(`navarch.${n}`);

interface Field {
  no: number;
  wt: number;
  /** varint value (bigint), fixed64 bytes, or length-delimited bytes. */
  v: bigint | Buffer;
}

/** Hand-written protobuf walker: tags, wire types, raw values. */
function walk(buf: Buffer): Field[] {
  const out: Field[] = [];
  let i = 0;
  const varint = (): bigint => {
    let r = 0n;
    let s = 0n;
    for (;;) {
      if (i >= buf.length) throw new Error('truncated varint');
      const b = buf[i++]!;
      r |= BigInt(b & 0x7f) << s;
      if ((b & 0x80) === 0) return r;
      s += 7n;
    }
  };
  while (i < buf.length) {
    const tag = varint();
    const no = Number(tag >> 3n);
    const wt = Number(tag & 7n);
    if (wt === 0) out.push({ no, wt, v: varint() });
    else if (wt === 1) {
      out.push({ no, wt, v: buf.subarray(i, i + 8) });
      i += 8;
    } else if (wt === 2) {
      const len = Number(varint());
      out.push({ no, wt, v: buf.subarray(i, i + len) });
      i += len;
    } else if (wt === 5) {
      out.push({ no, wt, v: buf.subarray(i, i + 4) });
      i += 4;
    } else throw new Error(`unexpected wire type ${wt}`);
  }
  if (i !== buf.length) throw new Error('trailing bytes');
  return out;
}

const nums = (fs: Field[]): number[] => [...new Set(fs.map((f) => f.no))].sort((a, b) => a - b);
const one = (fs: Field[], no: number): Field => {
  const f = fs.filter((x) => x.no === no);
  expect(f, `field ${no}`).toHaveLength(1);
  return f[0]!;
};
const str = (f: Field): string => (f.v as Buffer).toString('utf8');
const sub = (f: Field): Field[] => walk(f.v as Buffer);
const mapOf = (fs: Field[], no: number): Record<string, string> => {
  const m: Record<string, string> = {};
  for (const e of fs.filter((x) => x.no === no)) {
    const kv = sub(e);
    m[str(one(kv, 1))] = str(one(kv, 2));
  }
  return m;
};
const int32 = (f: Field): number => Number(BigInt.asIntN(32, f.v as bigint));
const dbl = (f: Field): number => (f.v as Buffer).readDoubleLE(0);

interface Captured {
  method: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** Encoded answers of a control plane that accepts everything; RegisterNode answers `register`. */
function acceptAll(register: Record<string, unknown>): Record<string, Uint8Array> {
  return {
    RegisterNode: T('RegisterNodeResponse').encode(register).finish(),
    SendHeartbeat: T('HeartbeatResponse').encode({ acknowledged: true }).finish(),
    ReportHealth: T('ReportHealthResponse').encode({ acknowledged: true, nodeStatus: 1 }).finish(),
    GetNodeCommands: T('GetNodeCommandsResponse').encode({}).finish(),
  };
}

/**
 * A control plane over plain HTTP: each request, once read whole, goes to `onCall` with `answer`,
 * which sends the reply for its method (404 for anything but a POST of a method in `replies`).
 */
function controlPlane(replies: Record<string, Uint8Array>, onCall: (call: Captured, answer: () => void) => void): http.Server {
  return http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const method = (req.url ?? '').replace('/navarch.ControlPlaneService/', '');
      onCall({ method, headers: req.headers, body: Buffer.concat(chunks) }, () => {
        const reply = replies[method];
        if (req.method !== 'POST' || !reply) {
          res.writeHead(404).end();
          return;
        }
        res.writeHead(200, { 'content-type': 'application/proto' });
        res.end(Buffer.from(reply));
      });
    });
  });
}

/** Listens on an ephemeral loopback port; resolves with the base URL. */
async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

describe('wire format (captured bytes, independent decoders)', () => {
  let server: http.Server | null = null;
  afterEach(async () => {
    const s = server;
    server = null;
    if (s) {
      const closed = new Promise<void>((r) => s.close(() => r()));
      s.closeAllConnections();
      await closed;
    }
  });

  it('RegisterNodeRequest, HeartbeatRequest and HealthEvent carry every field with the right numbers', async () => {
    const captured: Captured[] = [];
    const register = {
      success: true,
      message: 'registration successful',
      config: { healthCheckIntervalSeconds: 3600, heartbeatIntervalSeconds: 1, enabledHealthChecks: ['boot'] },
    };
    server = controlPlane(acceptAll(register), (call, answer) => {
      captured.push(call);
      answer();
    });
    const { link, store } = makeLink(await listen(server), {}, { token: 'tok-123' });
    link.start();
    try {
      await link.whenRegistered();
      await waitFor(() => captured.some((c) => c.method === 'SendHeartbeat'), 20_000, 'heartbeat');
      await store.append(xidInput(3, 79, { timeMs: 1_700_000_000_123 }));
      await store.append({ ...xidInput(0, 13), gpuIndex: -1, gpuUuid: '', key: 'node/xid/13', timeMs: 1_700_000_001_000 });
      await waitFor(() => store.pendingCount() === 0, 20_000, 'events acked');
    } finally {
      await link.stop({ deadlineMs: 2000 });
    }

    // ---- transport ----
    const reg = captured.find((c) => c.method === 'RegisterNode')!;
    expect(reg.headers['content-type']).toBe('application/proto');
    expect(reg.headers['connect-protocol-version']).toBe('1');
    expect(reg.headers.authorization).toBe('Bearer tok-123');
    expect(Number(reg.headers['connect-timeout-ms'])).toBeGreaterThan(0);

    // ---- RegisterNodeRequest ----
    const inv = inventory();
    const r = walk(reg.body);
    expect(nums(r)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(str(one(r, 1))).toBe(inv.nodeId);
    expect(str(one(r, 2))).toBe(inv.provider);
    expect(str(one(r, 3))).toBe(inv.region);
    expect(str(one(r, 4))).toBe(inv.zone);
    expect(str(one(r, 5))).toBe(inv.instanceType);
    const gpus = r.filter((f) => f.no === 6).map(sub);
    expect(gpus).toHaveLength(2);
    const g1 = gpus[1]!;
    // index 1 is non-zero so all 7 GPUInfo fields are on the wire.
    expect(nums(g1)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(Number(one(g1, 1).v)).toBe(1);
    expect(str(one(g1, 2))).toBe(inv.gpus[1]!.uuid);
    expect(str(one(g1, 3))).toBe('NVIDIA H100 80GB HBM3');
    expect(str(one(g1, 4))).toBe('00000000:42:00.0');
    expect(one(g1, 5).v).toBe(85899345920n);
    expect(str(one(g1, 6))).toBe('550.90.07');
    expect(str(one(g1, 7))).toBe('12.4');
    const md = sub(one(r, 7));
    expect(nums(md)).toEqual([1, 2, 3, 4, 5]);
    expect(str(one(md, 1))).toBe('node-a.internal');
    expect(str(one(md, 2))).toBe('10.1.2.3');
    expect(str(one(md, 3))).toBe('34.5.6.7');
    expect(str(one(md, 4))).toBe('6.8.0-45-generic');
    expect(mapOf(md, 5)).toEqual({ team: 'ml', rack: 'r12', pool: 'training' });
    // Independent decoder agrees.
    const rd = T('RegisterNodeRequest').toObject(T('RegisterNodeRequest').decode(reg.body), { longs: String }) as Record<string, any>;
    expect(rd.nodeId).toBe('node-a');
    expect(rd.gpus[0].memoryTotal).toBe('85899345920');
    expect(rd.metadata.labels.pool).toBe('training');

    // ---- HeartbeatRequest: node_id and metrics, no timestamp (field 2) ----
    const hb = captured.find((c) => c.method === 'SendHeartbeat')!;
    const h = walk(hb.body);
    expect(nums(h)).toEqual([1, 3]);
    expect(str(one(h, 1))).toBe('node-a');
    const nm = sub(one(h, 3));
    expect(nums(nm)).toEqual([1, 2, 3]);
    expect(one(nm, 1).wt).toBe(1);
    expect(dbl(one(nm, 1))).toBe(12.5);
    expect(dbl(one(nm, 2))).toBe(40.25);
    const gm = nm.filter((f) => f.no === 3).map(sub);
    expect(gm).toHaveLength(2);
    expect(nums(gm[1]!)).toEqual([1, 2, 3, 4, 5]);
    expect(Number(one(gm[1]!, 1).v)).toBe(1);
    expect(Number(one(gm[1]!, 2).v)).toBe(50);
    expect(Number(one(gm[1]!, 3).v)).toBe(310);
    expect(dbl(one(gm[1]!, 4))).toBe(80);
    expect(one(gm[1]!, 5).v).toBe(1024n);
    const hd = T('HeartbeatRequest').decode(hb.body) as unknown as { timestamp?: unknown; metrics: { gpuMetrics: unknown[] } };
    expect(hd.timestamp).toBeFalsy();
    expect(hd.metrics.gpuMetrics).toHaveLength(2);

    // ---- ReportHealthRequest / HealthEvent ----
    const reports = captured.filter((c) => c.method === 'ReportHealth').map((c) => walk(c.body));
    const evs = reports.flatMap((rep) => rep.filter((f) => f.no === 3).map(sub));
    expect(evs.length).toBeGreaterThanOrEqual(2);
    const gpuEv = evs.find((e) => int32(one(e, 2)) === 3)!;
    expect(nums(gpuEv)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const ts = sub(one(gpuEv, 1));
    expect(one(ts, 1).v).toBe(1_700_000_000n);
    expect(one(ts, 2).v).toBe(123_000_000n);
    expect(str(one(gpuEv, 3))).toBe('GPU-00000003-aaaa-bbbb-cccc-000000000003');
    expect(Number(one(gpuEv, 4).v)).toBe(10); // DRIVER
    expect(Number(one(gpuEv, 5).v)).toBe(1); // XID
    const metrics = mapOf(gpuEv, 6);
    expect(metrics.xid_code).toBe('79');
    expect(metrics.count).toBe('1');
    expect(str(one(gpuEv, 7))).toBe('XID 79 on GPU 3');
    // Node level: gpu_index -1 sent explicitly (10-byte varint), not left at proto3's 0.
    const nodeEv = evs.find((e) => e.some((f) => f.no === 2 && int32(f) === -1));
    expect(nodeEv).toBeDefined();
    expect((one(nodeEv!, 2).v as bigint) > 0xffffffffn).toBe(true);
    expect(nodeEv!.some((f) => f.no === 3)).toBe(false);
    // The report's node_id is field 1; results are field 2.
    const withResults = reports.find((rep) => rep.some((f) => f.no === 2))!;
    expect(str(one(withResults, 1))).toBe('node-a');
    const res0 = sub(withResults.find((f) => f.no === 2)!);
    expect(str(one(res0, 1))).toBe('boot');
    expect(Number(one(res0, 2).v)).toBe(1); // HEALTHY
    const rdec = T('ReportHealthRequest').decode(
      captured.find((c) => c.method === 'ReportHealth' && walk(c.body).some((f) => f.no === 3))!.body,
    ) as unknown as {
      events: Array<{ gpuIndex: number; eventType: number; system: number; metrics: Record<string, string> }>;
    };
    expect(rdec.events.some((e) => e.eventType === 1 && e.system === 10 && e.metrics.xid_code === '79')).toBe(true);
  });
  it('one ReportHealth in flight at a time; events appended meanwhile are batched into the next call', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const reportSizes: number[] = [];
    const register = { success: true, config: { healthCheckIntervalSeconds: 3600, heartbeatIntervalSeconds: 3600 } };
    server = controlPlane(acceptAll(register), (call, answer) => {
      if (call.method !== 'ReportHealth') return answer();
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      reportSizes.push(walk(call.body).filter((f) => f.no === 3).length);
      setTimeout(() => {
        inFlight--;
        answer();
      }, 150);
    });
    const { link, store } = makeLink(await listen(server));
    link.start();
    try {
      await link.whenRegistered();
      for (let i = 0; i < 60; i++) {
        // Distinct keys: the store coalesces a pending event under the same key (this test is about batching).
        await store.append(xidInput(i % 4, 13, { fault: 'none', key: `gpu${i % 4}/xid/13/${i}` }));
        await new Promise((r) => setTimeout(r, 5));
      }
      await waitFor(() => store.pendingCount() === 0, 30_000, 'all acked');
    } finally {
      await link.stop({ deadlineMs: 2000 });
    }
    expect(maxInFlight).toBe(1);
    const withEvents = reportSizes.filter((n) => n > 0);
    expect(withEvents.reduce((a, b) => a + b, 0)).toBe(60);
    // Batched: far fewer calls than events.
    expect(withEvents.length).toBeLessThan(30);
  });
});
