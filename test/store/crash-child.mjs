// Child for store-crash tests: appends (and acks) in a loop, reporting on stdout each operation
// only after its promise resolved. The parent kills it with SIGKILL at a random moment.
import { writeSync } from 'node:fs';
const [, , jsDir, dir, startStr] = process.argv;
const { openEventStore } = await import(`${jsDir}/store/event-store.js`);
const store = await openEventStore({ dir, fsync: true, maxBytes: 1024 * 1024, bootId: 'crash-boot' });
writeSync(1, 'ready\n');
let i = Number(startStr);
for (;;) {
  const batch = [];
  for (let j = 0; j < 8; j++, i++) {
    const n = i;
    const sev = ['info', 'warning', 'critical'][n % 3];
    batch.push(
      store
        .append({
          type: 'xid',
          system: 'DRIVER',
          gpuIndex: n % 4,
          gpuUuid: `GPU-${n % 4}`,
          metrics: { i: String(n) },
          message: `event ${n}`,
          timeMs: Date.now(),
          severity: sev,
          action: 'none',
          citation: 'crash test',
          source: 'agent',
          key: `k/${n}`,
          fault: n % 50 === 0 ? 'raise' : 'none',
        })
        .then((r) => writeSync(1, `ok ${n} ${r.event.id}\n`)),
    );
  }
  // one coalescing append per batch: the storm event's count must stay exact across crashes
  batch.push(
    store
      .append({
        type: 'xid',
        system: 'DRIVER',
        gpuIndex: 0,
        gpuUuid: 'GPU-0',
        metrics: { i: 'storm' },
        message: 'storm',
        timeMs: Date.now(),
        severity: 'critical',
        action: 'none',
        citation: 'crash test',
        source: 'agent',
        key: 'storm',
        fault: 'none',
      })
      .then(() => writeSync(1, 'storm\n')),
  );
  await Promise.all(batch);
  if (i % 40 === 0) {
    // As many acked as appended (the storm event aside): the backlog stays level, so a fast,
    // idle machine (more appends per round) does not push the store to its bounds and shed.
    const p = store
      .pending(41)
      .filter((e) => e.key !== 'storm')
      .slice(0, 40);
    writeSync(1, `acking ${p.map((e) => e.metrics.i).join(',')}\n`);
    await store.ack(p.map((e) => ({ id: e.id, count: e.count })));
    writeSync(1, `acked ${p.map((e) => e.metrics.i).join(',')}\n`);
    writeSync(1, `shed ${store.stats().shed}\n`);
    writeSync(2, `compactions ${store.stats().compactions}\n`);
  }
}
