#!/usr/bin/env node
/**
 * The development control plane in its own process, for the control-plane benchmarks (Navarch's
 * Go control plane is a separate process in production, so its CPU and GC must not add to the
 * agent side's). Driven over the IPC channel of `child_process.fork()`:
 *
 *   parent -> child: {op:'start', port?}  {op:'stop'}  {op:'calls'}  {op:'exit'}
 *   child -> parent: {op:'started', url, port}  {op:'stopped'}  {op:'calls', calls, connections}
 *                    {op:'ev', seq, key, ns, reasserted}   (one per received event; ns is
 *                    process.hrtime.bigint() at the handler, CLOCK_MONOTONIC, so comparable with
 *                    the parent's hrtime on the same machine)
 *
 * Not a benchmark by itself; run by controlplane-latency.mjs and controlplane-xid.mjs.
 */
const dist = new URL('../dist/', import.meta.url);
const { startDevControlPlane } = await import(new URL('devcp/dev-server.js', dist).href);

if (typeof process.send !== 'function') {
  console.error('controlplane-devcp-child: must be started with child_process.fork()');
  process.exit(2);
}
let cp = null;
const send = (m) => process.send(m);
process.on('message', async (m) => {
  try {
    if (m.op === 'start') {
      cp = await startDevControlPlane({ port: m.port ?? 0, heartbeatIntervalSeconds: 30, healthCheckIntervalSeconds: 3600 });
      // Reported after the handler has answered (setImmediate), so the IPC write is not on the
      // measured path nor in the answer's way.
      let queue = [];
      cp.onEvent((ev) => {
        if (queue.length === 0)
          setImmediate(() => {
            const q = queue;
            queue = [];
            for (const m of q) send(m);
          });
        queue.push({
          op: 'ev',
          seq: ev.metrics.bench_seq ?? null,
          key: ev.metrics.fault_key ?? null,
          ns: String(ev.receivedAtNs),
          reasserted: ev.metrics.reasserted === 'true',
          node: ev.nodeId,
        });
      });
      send({ op: 'started', url: cp.url, port: cp.port });
    } else if (m.op === 'stop') {
      await cp?.close();
      cp = null;
      send({ op: 'stopped' });
    } else if (m.op === 'calls') {
      send({
        op: 'calls',
        calls: cp?.calls() ?? {},
        connections: cp?.connections?.() ?? null,
        nodes: cp?.nodes().map((n) => ({ nodeId: n.nodeId, gpus: n.gpus.length })) ?? [],
      });
    } else if (m.op === 'exit') {
      await cp?.close();
      process.exit(0);
    }
  } catch (e) {
    send({ op: 'error', message: String(e?.message ?? e) });
  }
});
process.on('disconnect', () => process.exit(0));
send({ op: 'ready' });
