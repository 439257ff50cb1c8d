// The metric names a PromQL expression (or a Grafana query using $variables) selects, and the
// expressions of the shipped Grafana dashboard and Prometheus rules. Used by the tests that check
// every queried metric is one the agent exports (test/deploy/dashboard-metrics.test.ts).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { repoRoot } from './helpers.js';

export const DASHBOARD = join(repoRoot, 'deploy/grafana/navarch-agent-dashboard.json');
export const ALERT_RULES = join(repoRoot, 'deploy/prometheus/navarch-agent-alerts.yaml');
export const ALERT_TESTS = join(repoRoot, 'deploy/prometheus/navarch-agent-alerts.test.yaml');

/** PromQL words that look like identifiers but are not metric names. */
const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan', 'atan2']);

/** Grafana's variables replaced by values PromQL accepts (for a syntax check by promtool). */
export function substituteGrafanaVariables(expr: string): string {
  return expr.replace(/\$__(rate_interval|interval|range)\b/g, '5m').replace(/\$\{?(\w+)\}?/g, '.*');
}

/**
 * Metric names selected by `expr`: identifiers that remain once strings, label matchers, ranges,
 * grouping clauses, numbers and durations are removed, and that are not function calls or
 * keywords. `label_values(metric{...}, label)` (a Grafana variable query) yields the metric only.
 */
export function metricNames(expr: string): string[] {
  let e = expr.replace(/^\s*label_values\s*\(([\s\S]*),\s*\w+\s*\)\s*$/, '$1');
  e = e
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\{?\w+\}?/g, ' ')
    .replace(/(?<![\w:])\d+(\.\d+)?(e[+-]?\d+)?(ms|[smhdwy])?(?![\w:])/gi, ' ');
  const names = new Set<string>();
  for (const m of e.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const after = e.slice(m.index + m[0].length);
    if (/^\s*\(/.test(after)) continue; // a function or aggregation
    if (KEYWORDS.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return [...names].sort();
}

interface Panel {
  title?: string;
  type?: string;
  targets?: { expr?: string }[];
  panels?: Panel[];
}

/** Every PromQL expression of the dashboard: panel targets (rows' nested panels too) and query variables. */
export function dashboardExpressions(dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8'))): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const walk = (ps: Panel[]): void => {
    for (const p of ps) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ where: `panel "${p.title}"`, expr: t.expr });
      if (p.panels) walk(p.panels);
    }
  };
  walk(dashboard.panels ?? []);
  for (const v of dashboard.templating?.list ?? []) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    if (q) out.push({ where: `variable $${v.name}`, expr: q });
  }
  return out;
}

/** Every rule expression of the alert rules file. */
export function ruleExpressions(text = readFileSync(ALERT_RULES, 'utf8')): { where: string; expr: string }[] {
  const doc = parseYaml(text) as { groups: { name: string; rules: { alert?: string; record?: string; expr: string }[] }[] };
  return doc.groups.flatMap((g) => g.rules.map((r) => ({ where: `rule ${r.alert ?? r.record}`, expr: String(r.expr) })));
}

/**
 * Metric names a /metrics exposition declares (`# TYPE` lines, whether or not a series has a
 * sample yet), with the _bucket/_sum/_count series of histograms and _sum/_count of summaries.
 */
export function exportedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m as unknown as [string, string, string];
    names.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
    if (type === 'summary') for (const s of ['_sum', '_count']) names.add(name + s);
  }
  return names;
}
