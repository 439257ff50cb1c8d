// The shipped Grafana dashboard and Prometheus alert rules query only metrics the agent exports:
// names parsed from every expression are compared with the /metrics of an agent process on the
// fake backend. Prometheus's own `up` is the one name the agent cannot export.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DIST_BUILT, MAIN_JS, startAgent, type AgentProcess } from '../e2e/agent-helpers.js';
import { DASHBOARD, dashboardExpressions, exportedNames, metricNames, ruleExpressions } from './promql-names.js';

/** Series Prometheus itself writes for every scrape target. */
const PROMETHEUS_OWN = new Set(['up']);

describe('metric names of a PromQL expression', () => {
  it.each([
    ['navarch_agent_active_faults{severity="critical"} > 0', ['navarch_agent_active_faults']],
    ['sum by (instance, gpu) (increase(navarch_agent_xid_total{instance=~"$instance"}[$__rate_interval])) > 20', ['navarch_agent_xid_total']],
    ['navarch_agent_events_pending > 0 and deriv(navarch_agent_events_pending[15m]) > 0', ['navarch_agent_events_pending']],
    ['a_info * on (instance) group_left (version, backend) b_info', ['a_info', 'b_info']],
    ['histogram_quantile(0.99, sum by (le) (rate(x_bucket{k="v,w}"}[5m])))', ['x_bucket']],
    ['rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu=~"$gpu"}[5m] offset 1h) / 1000', ['DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION']],
    ['sum(m1) without (gpu) or vector(0)', ['m1']],
    ['label_values(DCGM_FI_DEV_GPU_TEMP{instance=~"$instance"}, gpu)', ['DCGM_FI_DEV_GPU_TEMP']],
    ['label_values(navarch_agent_build_info, instance)', ['navarch_agent_build_info']],
    ['1 - up{job="navarch-agent"}', ['up']],
  ])('%s', (expr, names) => {
    expect(metricNames(expr)).toEqual(names);
  });
});

describe('the dashboard file', () => {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
  it('is a Grafana dashboard on a chosen Prometheus data source, with unique panel ids inside the 24-column grid', () => {
    expect(dash.uid).toBe('navarch-agent');
    expect(dash.templating.list.map((v: { name: string }) => v.name)).toEqual(['datasource', 'instance', 'gpu']);
    expect(dash.templating.list[0]).toMatchObject({ type: 'datasource', query: 'prometheus' });
    const ids = dash.panels.map((p: { id: number }) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dash.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
      if (p.type === 'row') continue;
      expect(p.datasource, p.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(p.targets.length, p.title).toBeGreaterThan(0);
    }
  });
});

if (!DIST_BUILT) console.warn(`[skip] dashboard/rules metric names against a running agent: ${MAIN_JS} not built (run npm run build)`);

describe.skipIf(!DIST_BUILT)('dashboard and alert rules query only what the agent exports (agent process, fake backend)', () => {
  let agent: AgentProcess;
  let exposition = '';

  beforeAll(async () => {
    agent = await startAgent({
      args: ['--gpu-backend', 'fake', '--server', 'http://127.0.0.1:9', '--node-id', 'dash-names', '--kmsg-path', 'none'],
    });
    exposition = await agent.metrics();
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
  });

  const queried = [...dashboardExpressions(), ...ruleExpressions()];

  it('finds the expressions (38 dashboard panels and 3 variables, 10 rules)', () => {
    expect(dashboardExpressions().length).toBeGreaterThanOrEqual(40);
    expect(ruleExpressions()).toHaveLength(10);
    for (const q of queried) expect(metricNames(q.expr).length, `${q.where}: ${q.expr}`).toBeGreaterThan(0);
  });

  it('every metric name in them is declared by the agent /metrics', () => {
    const exported = exportedNames(exposition);
    expect(exported.size).toBeGreaterThan(50);
    const missing = queried.flatMap((q) =>
      metricNames(q.expr)
        .filter((n) => !exported.has(n) && !PROMETHEUS_OWN.has(n))
        .map((n) => `${q.where}: ${n}`),
    );
    expect(missing).toEqual([]);
  });

  it('the GPU telemetry they graph has samples from the fake H100s', () => {
    const dcgm = new Set(queried.flatMap((q) => metricNames(q.expr)).filter((n) => n.startsWith('DCGM_FI_')));
    expect(dcgm.size).toBeGreaterThanOrEqual(25);
    const sampled = [...dcgm].filter((n) => new RegExp(`^${n}\\{gpu="0"`, 'm').test(exposition));
    expect(sampled.sort()).toEqual([...dcgm].sort());
  });
});
