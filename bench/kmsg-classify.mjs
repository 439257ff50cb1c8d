#!/usr/bin/env node
/**
 * Kernel-log classification rate with the full XID catalog, the NVLink5 decoder and the SXid
 * table in place (needs `npm run build`). Per record: parseKmsgRecord + parseNvrmLine (or
 * parseSxidLine) + the event (xidEventInput / sxidEventInput). The baseline, measured in the same
 * run, is parseKmsgRecord + parseNvrmLine alone on the same records; the result is given as a
 * ratio against it. "agent path" is what the kernel-log source runs per record since the split:
 * parseKmsgRecord + KmsgClassifier.eventsFor (src/sources/kmsg-classify.ts), with a GPU resolver,
 * also as a ratio against the same baseline.
 *
 *   node bench/kmsg-classify.mjs [--count 100000] [--rounds 3]
 */
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { count: { type: 'string', default: '100000' }, rounds: { type: 'string', default: '3' } } });
const count = Number(values.count);
const rounds = Number(values.rounds);
const dist = new URL('../dist/', import.meta.url);
const parse = await import(new URL('sources/kmsg-parse.js', dist).href);
const { xidEventInput } = await import(new URL('xid/catalog.js', dist).href);
const sxid = await import(new URL('xid/sxid.js', dist).href);
const { KmsgClassifier } = await import(new URL('sources/kmsg-classify.js', dist).href);
const GPU = { index: 0, uuid: 'GPU-5ca1ab1e-0000-4e56-8a4d-000000100000' };

const MIX = {
  xid119:
    '4,1227,437812449932,-;NVRM: Xid (PCI:0000:00:16): 119, pid=36055, name=dcgm-exporter, Timeout after 6s of waiting for RPC response from GPU0 GSP! Expected function 10 (FREE) (0x5c000001 0x0).\n',
  nvlink5:
    '4,1228,437812449933,-;NVRM: Xid (PCI:0009:01:00): 149, NETIR_LINK_EVT  Fatal   XC0 i0 Link 01 (0x021425c6 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)\n',
  xid142: '4,1229,437812449934,-;NVRM: Xid (PCI:0000:9b:00): 142, pid=1, name=x, NVENC3 Error\n',
  sxid: '4,1230,437812449935,-;nvidia-nvswitch1: SXid (PCI:0000:06:00.0): 20034, Fatal, Link 48 LTSSM Fault Up\n',
  other: '6,1231,437812449936,-;usb 1-1: new high-speed USB device number 2 using xhci_hcd\n',
};

function run(name, buf, full) {
  let events = 0;
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const r = parse.parseKmsgRecord(buf);
    if (!r) continue;
    const line = parse.parseNvrmLine(r.message);
    if (!full) {
      if (line) events++;
      continue;
    }
    if (line && line.kind === 'xid') {
      xidEventInput({ code: line.code, gpuIndex: 0, gpuUuid: '', timeMs: 0, source: 'kmsg', message: line.detail });
      events++;
    } else if (!line) {
      const sx = sxid.parseSxidLine(r.message);
      if (sx && sx.kind === 'headline') {
        sxid.sxidEventInput(sx, 0);
        events++;
      }
    }
  }
  return { name, perSec: Math.round(count / ((performance.now() - t0) / 1000)), events };
}

function runAgentPath(name, buf) {
  const c = new KmsgClassifier(1_780_000_000_000, () => GPU, undefined);
  let events = 0;
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const r = parse.parseKmsgRecord(buf);
    if (r) events += c.eventsFor(r, false).length;
  }
  return { name, perSec: Math.round(count / ((performance.now() - t0) / 1000)), events };
}

const out = {};
for (const [name, rec] of Object.entries(MIX)) {
  const buf = Buffer.from(rec);
  const base = [];
  const full = [];
  const agent = [];
  for (let r = 0; r < rounds; r++) {
    base.push(run(name, buf, false).perSec);
    full.push(run(name, buf, true).perSec);
    agent.push(runAgentPath(name, buf).perSec);
  }
  const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  out[name] = {
    parseOnlyPerSec: med(base),
    classifiedPerSec: med(full),
    ratio: +(med(full) / med(base)).toFixed(2),
    agentPathPerSec: med(agent),
    agentPathRatio: +(med(agent) / med(base)).toFixed(2),
  };
}
console.log(JSON.stringify({ node: process.version, count, rounds, results: out }, null, 2));
