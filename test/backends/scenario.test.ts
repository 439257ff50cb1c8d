/**
 * Scenario files: valid YAML/JSON run on a fake clock against the fake backend; malformed files
 * fail with exact, one-line errors naming the file and the entry.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FakeBackend } from '../../src/backends/fake.js';
import { loadScenario, parseScenario, runScenario, type ScenarioClock } from '../../src/backends/scenario.js';
import { selectBackend } from '../../src/backends/select.js';
import type { NvmlEvent } from '../../src/nvml/types.js';
import { waitFor } from './shared-suite.js';

const dir = mkdtempSync(join(tmpdir(), 'navarch-scenario-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

/** A manual clock: timers fire only when advance() passes their time. */
class FakeClock implements ScenarioClock {
  now = 0;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private next = 1;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.timers.push({ at: this.now + ms, fn, id });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.timers = this.timers.filter((t) => t.id !== handle);
  }
  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.at <= until).sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.now = due.at;
      due.fn();
    }
    this.now = until;
  }
  pending(): number {
    return this.timers.length;
  }
}

const YAML = `
name: xid-79-then-recover
events:
  - { at: 5s, gpu: 3, fault: xid, xid: 79 }
  - { at: 20s, gpu: 3, fault: recover }
  - { at: 10000, gpu: 3, fault: temperature, celsius: 97 }
  - at: 1m30s
    gpu: 1
    fault: clock_reasons
    mask: "0x48"
`;

describe('scenario files', () => {
  it('parses YAML, sorts by time, converts durations', async () => {
    const s = await loadScenario(file('ok.yaml', YAML), { gpuCount: 8 });
    expect(s.name).toBe('xid-79-then-recover');
    expect(s.events).toEqual([
      { atMs: 5000, fault: { kind: 'xid', gpu: 3, xid: 79 } },
      { atMs: 10000, fault: { kind: 'temperature', gpu: 3, celsius: 97 } },
      { atMs: 20000, fault: { kind: 'recover', gpu: 3 } },
      { atMs: 90000, fault: { kind: 'clock_reasons', gpu: 1, mask: 0x48 } },
    ]);
  });

  it('parses JSON', async () => {
    const s = await loadScenario(
      file(
        'ok.json',
        JSON.stringify({
          name: 'j',
          events: [
            { at: 0, gpu: 0, fault: 'gpu_lost' },
            { at: '1s', fault: 'recover' },
          ],
        }),
      ),
    );
    expect(s.events.map((e) => e.fault.kind)).toEqual(['gpu_lost', 'recover']);
    expect(s.events[1]?.fault).toEqual({ kind: 'recover' });
  });

  it('runs on a fake clock: faults change telemetry and emit events at their times', async () => {
    const s = parseScenario(YAML, 'ok.yaml');
    const backend = new FakeBackend({ seed: 7 });
    await backend.open();
    const events: NvmlEvent[] = [];
    const w = backend.watch((b) => events.push(...b));
    const clock = new FakeClock();
    const run = runScenario(backend, s, { clock });
    clock.advance(4999);
    expect(run.injected()).toBe(0);
    clock.advance(1);
    expect(run.injected()).toBe(1);
    const xid = await waitFor('xid event', () => events.find((e) => e.type === 'xid'));
    expect(xid).toMatchObject({ deviceIndex: 3, data: 79 });
    clock.advance(5000);
    let snap = await backend.snapshot();
    expect(snap[3]?.ok && snap[3].telemetry.temperatureC).toBe(97);
    clock.advance(10000);
    snap = await backend.snapshot();
    expect(snap[3]?.ok && snap[3].telemetry.temperatureC).toBeLessThanOrEqual(60);
    clock.advance(70000);
    snap = await backend.snapshot();
    expect(snap[1]?.ok && (snap[1].telemetry.clockEventReasons ?? 0) & 0x48).toBe(0x48);
    await run.done;
    expect(run.injected()).toBe(4);
    expect(clock.pending()).toBe(0);
    await w.stop();
    await backend.close();
  });

  it('stop() cancels the remaining faults', async () => {
    const backend = new FakeBackend();
    await backend.open();
    const clock = new FakeClock();
    const run = runScenario(backend, parseScenario(YAML, 'ok.yaml'), { clock });
    clock.advance(6000);
    run.stop();
    expect(clock.pending()).toBe(0);
    await run.done;
    expect(run.injected()).toBe(1);
  });

  it("on the real clock, an `at` past 24.8 days (one timer's limit) does not fire at once", async () => {
    const backend = new FakeBackend({ count: 2 });
    await backend.open();
    const run = runScenario(backend, parseScenario('events: [{at: 2200000000, gpu: 0, fault: gpu_lost}]', 'late.yaml'));
    await new Promise((r) => setTimeout(r, 300));
    expect(run.injected()).toBe(0);
    run.stop();
    await run.done;
    expect(run.injected()).toBe(0);
    await backend.close();
  });

  it('through selectBackend (the daemon path), an `at` past 24.8 days does not fire at once', async () => {
    const p = file('late-select.yaml', 'events: [{at: 600h, gpu: 0, fault: gpu_lost}]');
    const r = await selectBackend({ mode: 'fake', env: { NAVARCH_GPU_COUNT: '1' }, scenarioFile: p });
    await new Promise((res) => setTimeout(res, 300));
    expect(r.scenario?.run?.injected()).toBe(0);
    const snap = await r.backend.snapshot();
    expect(snap[0]?.ok).toBe(true);
    r.scenario?.run?.stop();
    await r.backend.close();
  });

  it('a run-time failure goes to onError and the run continues', async () => {
    const backend = new FakeBackend({ count: 2 });
    await backend.open();
    const clock = new FakeClock();
    const errors: string[] = [];
    const run = runScenario(backend, parseScenario('events: [{at: 1, gpu: 5, fault: gpu_lost}, {at: 2, gpu: 0, fault: gpu_lost}]', 'x.yaml'), {
      clock,
      onError: (e) => errors.push(e.message),
    });
    clock.advance(10);
    await run.done;
    expect(errors).toEqual(['inject gpu_lost: gpu 5 out of range 0..1']);
    expect(run.injected()).toBe(1);
  });

  it("selectBackend runs the scenario on real (unref'd) timers", async () => {
    const p = file('real.yaml', 'name: quick\nevents:\n  - { at: 10ms, gpu: 0, fault: gpu_lost }\n');
    const injected: string[] = [];
    const r = await selectBackend({
      mode: 'fake',
      env: { NAVARCH_GPU_COUNT: '2' },
      scenarioFile: p,
      scenarioHooks: { onInject: (ev) => injected.push(ev.fault.kind) },
    });
    expect(r.scenario?.scenario.name).toBe('quick');
    await r.scenario?.run?.done;
    expect(injected).toEqual(['gpu_lost']);
    const snap = await r.backend.snapshot();
    expect(snap[0]?.ok).toBe(false);
    await r.backend.close();
  });

  const BAD: Array<[string, string, string]> = [
    [
      'scenario.yaml',
      'name: x\nevents:\n  - {at: 1s, gpu: 0, fault: xid, xid: 79}\n  - {at: 2s, gpu: 0, fault: recover}\n  - {at: 3s, gpu: 0, fault: xyd}\n',
      'scenario.yaml: events[2].fault: unknown fault "xyd"',
    ],
    ['a.yaml', 'events:\n  - {gpu: 0, fault: xid, xid: 79}\n', 'a.yaml: events[0].at: missing'],
    ['b.yaml', 'events:\n  - {at: soon, gpu: 0, fault: xid, xid: 79}\n', 'b.yaml: events[0].at: expected milliseconds or a duration like "5s", got "soon"'],
    ['c.yaml', 'events:\n  - {at: 1s, fault: xid, xid: 79}\n', 'c.yaml: events[0].gpu: missing'],
    ['d.yaml', 'events:\n  - {at: 1s, gpu: 0, fault: xid}\n', 'd.yaml: events[0].xid: missing (required by fault "xid")'],
    ['e.yaml', 'events:\n  - {at: 1s, gpu: 0, fault: xid, xid: -4}\n', 'e.yaml: events[0].xid: expected a whole number >= 0, got -4'],
    [
      'f.yaml',
      'events:\n  - {at: 1s, gpu: 0, fault: xid, xid: 79, celsius: 3}\n',
      'f.yaml: events[0].celsius: not a field of fault "xid" (expected xid, message)',
    ],
    ['g.yaml', 'events:\n  - {at: 1s, gpu: 9, fault: gpu_lost}\n', 'g.yaml: events[0].gpu: 9 out of range (the node has 8 GPUs)'],
    ['h.yaml', 'name: x\nevent: []\n', 'h.yaml: unknown key "event" (expected name, description, events)'],
    ['i.yaml', 'events: {a: 1}\n', 'i.yaml: events: expected a list'],
    ['j.yaml', '- 1\n- 2\n', 'j.yaml: expected a mapping with "name" and "events"'],
    ['k.yaml', 'events:\n  - 5\n', 'k.yaml: events[0]: expected a mapping like { at: "5s", gpu: 0, fault: "xid", xid: 79 }'],
    [
      'l.yaml',
      'events:\n  - {at: 1s, gpu: 0, fault: remapped_rows, pending: yes-please}\n',
      'l.yaml: events[0].pending: expected true or false, got "yes-please"',
    ],
    ['m.json', '{"events": [', 'm.json: not valid JSON: '],
    ['n.yaml', 'events: [\n', 'n.yaml: not valid YAML: '],
  ];
  for (const [name, text, message] of BAD) {
    it(`rejects ${name}: ${message}`, async () => {
      const p = file(name, text);
      const err = await loadScenario(p, { gpuCount: 8 }).then(
        () => null,
        (e: Error) => e,
      );
      expect(err).toBeInstanceOf(Error);
      const msg = (err as Error).message;
      expect(msg).not.toContain('\n');
      const expected = message.replace(/^[^:]+/, p);
      if (message.endsWith(': ')) expect(msg.startsWith(expected)).toBe(true);
      else expect(msg).toBe(expected);
    });
  }

  it('checks NVLink links against the model', async () => {
    const p = file('links.yaml', 'events:\n  - {at: 1s, gpu: 0, fault: nvlink_down, link: 3}\n');
    await expect(loadScenario(p, { gpuCount: 8, nvlinkCount: 0 })).rejects.toThrow(`${p}: events[0].link: the GPUs have no NVLink`);
    await expect(loadScenario(p, { nvlinkCount: 2 })).rejects.toThrow(`${p}: events[0].link: 3 out of range (the GPUs have 2 links)`);
    await expect(selectBackend({ mode: 'fake', env: { NAVARCH_GPU_TYPE: 'NVIDIA L4' }, scenarioFile: p })).rejects.toThrow(
      `${p}: events[0].link: the GPUs have no NVLink`,
    );
    expect((await loadScenario(p, { nvlinkCount: 18 })).events).toHaveLength(1);
  });

  it('names the file when it cannot be read', async () => {
    await expect(loadScenario(join(dir, 'missing.yaml'))).rejects.toThrow(`${join(dir, 'missing.yaml')}: cannot read scenario: ENOENT`);
  });
});
