/**
 * navarch_agent_xid_total has bounded cardinality, through the agent process: 40 distinct XID
 * codes outside the catalog become one code="other" series with the exact total, while catalog
 * codes keep their own series.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { xidMetricLabels } from '../../src/api/metrics.js';
import { DIST_BUILT, MAIN_JS, metricValue, startAgent, waitFor, type AgentProcess } from './agent-helpers.js';

describe('xidMetricLabels', () => {
  it('keeps catalog and fatal-list codes, buckets the rest and odd GPU indexes', () => {
    expect(xidMetricLabels(3, 79)).toEqual({ gpu: '3', code: '79' });
    expect(xidMetricLabels(-1, 100)).toEqual({ gpu: '-1', code: '100' });
    expect(xidMetricLabels(0, 4242)).toEqual({ gpu: '0', code: 'other' });
    expect(xidMetricLabels(0, 999)).toEqual({ gpu: '0', code: 'other' });
    expect(xidMetricLabels(0, -5)).toEqual({ gpu: '0', code: 'other' });
    expect(xidMetricLabels(5000, 79)).toEqual({ gpu: 'other', code: '79' });
    expect(xidMetricLabels(1.5, 79)).toEqual({ gpu: 'other', code: '79' });
  });
});

if (!DIST_BUILT) console.warn(`skipping metric cardinality process test: ${MAIN_JS} not built (run npm run build)`);

describe.skipIf(!DIST_BUILT)('XID metric cardinality (agent process)', () => {
  let agent: AgentProcess | undefined;
  afterAll(async () => {
    await agent?.stop('SIGKILL');
  });

  it('40 unknown codes are one code="other" series; a catalog code keeps its own', async () => {
    agent = await startAgent({
      args: ['--gpu-backend', 'fake', '--server', 'http://127.0.0.1:9', '--node-id', 'e2e-xid-card', '--kmsg-path', 'none'],
    });
    const unknown = Array.from({ length: 40 }, (_, i) => 5000 + i);
    for (const xid of unknown) expect((await agent.inject({ kind: 'xid', gpu: 0, xid })).status).toBe(200);
    expect((await agent.inject({ kind: 'xid', gpu: 0, xid: 79 })).status).toBe(200);
    const text = await waitFor('xid counted', async () => {
      const t = await agent!.metrics();
      return metricValue(t, 'navarch_agent_xid_total', 'gpu="0"', 'code="other"') === 40 &&
        metricValue(t, 'navarch_agent_xid_total', 'gpu="0"', 'code="79"') === 1
        ? t
        : null;
    });
    const series = text.split('\n').filter((l) => l.startsWith('navarch_agent_xid_total{'));
    expect(series).toHaveLength(2);
    expect(text).not.toMatch(/navarch_agent_xid_total\{[^}]*code="50\d\d"/);
  }, 90_000);
});
