// promtool (Debian's `prometheus` package; scripts/ci-deps.sh installs it when it can) checks the
// shipped alert rules, runs their unit tests, and parses every query of the Grafana dashboard.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { have, run } from './helpers.js';
import { ALERT_RULES, ALERT_TESTS, dashboardExpressions, substituteGrafanaVariables } from './promql-names.js';

const hasPromtool = have('promtool', ['--version']);
if (!hasPromtool) console.warn('[skip] promtool: not installed (apt-get install prometheus; scripts/ci-deps.sh tries it)');

describe.skipIf(!hasPromtool)('Prometheus rules and dashboard queries (promtool)', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'navarch-promtool-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('promtool check rules accepts deploy/prometheus/navarch-agent-alerts.yaml', () => {
    const r = run('promtool', ['check', 'rules', ALERT_RULES]);
    expect(r.stdout + r.stderr).toContain('SUCCESS: 10 rules found');
    expect(r.status).toBe(0);
  });

  it('promtool test rules: every alert fires when it should and only then (navarch-agent-alerts.test.yaml)', () => {
    const r = run('promtool', ['test', 'rules', ALERT_TESTS]);
    expect(r.stdout + r.stderr).toMatch(/SUCCESS/);
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });

  it('every dashboard query is valid PromQL (Grafana variables substituted), as recording rules', () => {
    const exprs = dashboardExpressions().map((q) => ({
      ...q,
      promql: substituteGrafanaVariables(q.expr.replace(/^\s*label_values\s*\(([\s\S]*),\s*\w+\s*\)\s*$/, '$1')),
    }));
    const file = join(dir, 'dashboard-queries.yaml');
    writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules: exprs.map((q, i) => ({ record: `dashboard:query_${i}`, expr: q.promql })) }] }));
    const r = run('promtool', ['check', 'rules', file]);
    expect(r.stdout + r.stderr).toContain(`SUCCESS: ${exprs.length} rules found`);
    expect(r.status).toBe(0);
  });

  it('the check is real: a broken expression fails it with the rule named', () => {
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, stringify({ groups: [{ name: 'x', rules: [{ alert: 'Broken', expr: 'sum by (gpu (navarch_agent_gpus)' }] }] }));
    const r = run('promtool', ['check', 'rules', file]);
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Broken|parse error/);
  });
});
