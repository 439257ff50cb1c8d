#!/usr/bin/env node
/**
 * Cost of reboot-aware escalation per XID event (needs `npm run build`): xidEventInput + the
 * history's observe() (src/xid/reboot-escalation.ts, the pure part; no file writes: a storm of a
 * known fault writes nothing). Baseline in the same run: xidEventInput alone on the same events.
 * Cases: a storm of one XID on one GPU; 8 GPUs x 20 codes round robin (160 faults, over the
 * 128-fault bound, so entries are evicted); a storm of an XID already escalated (3rd boot).
 *
 *   node bench/reboot-escalation.mjs [--count 100000] [--rounds 3]
 */
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { count: { type: 'string', default: '100000' }, rounds: { type: 'string', default: '3' } } });
const count = Number(values.count);
const rounds = Number(values.rounds);
const dist = new URL('../dist/', import.meta.url);
const { xidEventInput } = await import(new URL('xid/catalog.js', dist).href);
const { RebootHistory, emptyHistory } = await import(new URL('xid/reboot-escalation.js', dist).href);

const T0 = 1_780_000_000_000;
const CODES = [48, 74, 79, 95, 119, 120, 140, 62, 38, 142, 46, 109, 110, 136, 143, 155, 156, 158, 151, 169];
const uuid = (g) => `GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeee000${g}`;
const mk = (i, spread) => {
  const g = spread ? i % 8 : 2;
  const code = spread ? CODES[Math.floor(i / 8) % CODES.length] : 79;
  return { code, gpuIndex: g, gpuUuid: uuid(g), timeMs: T0, source: 'kmsg', message: 'GPU has fallen off the bus.' };
};

/** A history on its 3rd boot in which XID 79 on GPU 2 was seen in boots 1 and 2. */
function thirdBoot() {
  let d = emptyHistory();
  for (let b = 0; b < 2; b++) {
    const h = new RebootHistory(d, `boot-${b}`, T0);
    h.observe(xidEventInput(mk(0, false)), T0);
    d = h.toJSON();
  }
  return new RebootHistory(d, 'boot-2', T0);
}

function run(spread, history) {
  let replaced = 0;
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    let ev = xidEventInput(mk(i, spread));
    if (history) ev = history.observe(ev, T0 + i).input;
    if (ev.action === 'replace') replaced++;
  }
  return { perSec: Math.round(count / ((performance.now() - t0) / 1000)), replaced };
}

const cases = {
  storm_one_fault: { spread: false, history: () => new RebootHistory(emptyHistory(), 'boot-0', T0) },
  round_robin_160_faults: { spread: true, history: () => new RebootHistory(emptyHistory(), 'boot-0', T0) },
  storm_escalated: { spread: false, history: thirdBoot },
};
const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const out = {};
for (const [name, c] of Object.entries(cases)) {
  const base = [];
  const full = [];
  let replaced = 0;
  for (let r = 0; r < rounds; r++) {
    base.push(run(c.spread, null).perSec);
    const f = run(c.spread, c.history());
    full.push(f.perSec);
    replaced = f.replaced;
  }
  out[name] = { classifyPerSec: med(base), withEscalationPerSec: med(full), ratio: +(med(full) / med(base)).toFixed(2), replacedPerRound: replaced };
}
console.log(JSON.stringify({ node: process.version, count, rounds, results: out }, null, 2));
