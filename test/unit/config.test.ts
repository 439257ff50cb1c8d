import { mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError, resolveConfig, parseListen } from '../../src/config/config.js';
import { parseDuration, formatDuration } from '../../src/config/duration.js';

const dir = mkdtempSync(join(tmpdir(), 'navarch-config-'));
function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}
function resolve(flags: Record<string, string | boolean> = {}, env: NodeJS.ProcessEnv = {}) {
  return resolveConfig({ flags: new Map(Object.entries(flags)), env, hostname: 'host-a' });
}
function usage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(UsageError);
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('expected a UsageError');
}

describe('durations', () => {
  it('parses Go-style durations', () => {
    expect(parseDuration('10s')).toBe(10_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('2h')).toBe(7_200_000);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('0')).toBe(0);
    for (const bad of ['', '10', 's', '10 s', '-1s', '1d', 'abc']) expect(parseDuration(bad)).toBeNull();
    expect(formatDuration(90_000)).toBe('90s');
    expect(formatDuration(120_000)).toBe('2m');
  });
});

describe('resolveConfig', () => {
  it('has the Go node daemon defaults', () => {
    const c = resolve();
    expect(c.server).toBe('http://localhost:50051');
    expect(c.nodeId).toBe('host-a');
    expect(c.provider).toBe('gcp');
    expect(c.gpuBackend).toBe('auto');
    expect(c.stateDir).toBe('/var/lib/navarch-agent');
    expect(c.listen).toMatchObject({ host: '127.0.0.1', port: 19400, explicit: false, loopback: true });
    expect(c.kmsgPath).toBe('/dev/kmsg');
    expect(c.telemetryIntervalMs).toBe(10_000);
    expect(c.commandPollIntervalMs).toBe(10_000);
    expect(c.httpVersion).toBe('1.1');
    expect(c.verdict).toBe('agent');
    expect(c.authToken).toBeNull();
  });

  it('applies flag > env > config file > default', () => {
    const cfg = file('p.yaml', 'server: http://file:1\ntelemetryInterval: 3s\nregion: file-region\nzone: file-zone\n');
    const env = { NAVARCH_SERVER: 'http://env:2', NAVARCH_TELEMETRY_INTERVAL: '4s', NAVARCH_REGION: 'env-region' };
    const c = resolve({ config: cfg, server: 'http://flag:3' }, env);
    expect(c.server).toBe('http://flag:3');
    expect(c.telemetryIntervalMs).toBe(4000);
    expect(c.region).toBe('env-region');
    expect(c.zone).toBe('file-zone');
    expect(c.provider).toBe('gcp');
    const c2 = resolve({}, { NAVARCH_CONFIG: cfg });
    expect(c2.server).toBe('http://file:1');
    expect(c2.telemetryIntervalMs).toBe(3000);
  });

  it('reads JSON config files and labels', () => {
    const cfg = file('c.json', JSON.stringify({ pool: 'train', labels: { rack: 'r1' }, gpuBackend: 'fake' }));
    const c = resolve({ config: cfg });
    expect(c.labels).toEqual({ rack: 'r1', pool: 'train' });
    expect(c.gpuBackend).toBe('fake');
  });

  it('control-plane intervals are capped at 1h (the link refuses more) with a usage error', () => {
    expect(usage(() => resolve({ 'heartbeat-interval': '2h' }))).toMatch(/--heartbeat-interval: must be at most 1h, got "2h"/);
    expect(usage(() => resolve({ 'health-check-interval': '90m' }))).toMatch(/must be at most 1h/);
    expect(usage(() => resolve({ 'command-poll-interval': '61m' }))).toMatch(/must be at most 1h/);
    expect(resolve({ 'heartbeat-interval': '1h' }).heartbeatIntervalMs).toBe(3_600_000);
    expect(usage(() => resolve({ 'telemetry-interval': '25h' }))).toMatch(/must be at most 24h/);
  });

  it('refuses credentials or a query in the server URL without echoing them (the URL is logged)', () => {
    const cred = usage(() => resolve({ server: 'https://agent:s3cret@cp.example:443' }));
    expect(cred).toMatch(/must not carry credentials/);
    expect(cred).not.toContain('s3cret');
    const q = usage(() => resolve({ server: 'https://cp.example/api?token=s3cret' }));
    expect(q).toMatch(/must not have a query or fragment, got "https:\/\/cp\.example\/api\?\.\.\."/);
    expect(q).not.toContain('s3cret');
  });

  it('names the file and key of a malformed setting', () => {
    const cfg = file('config.yaml', 'heartbeatInterval: soon\n');
    expect(usage(() => resolve({ config: cfg }))).toMatch(/config\.yaml: key "heartbeatInterval": expected a duration like "30s"/);
    const unk = file('unknown.yaml', 'serverr: http://x\n');
    expect(usage(() => resolve({ config: unk }))).toMatch(/unknown\.yaml: unknown key "serverr"/);
    const bad = file('bad.yaml', 'a: [1\n');
    expect(usage(() => resolve({ config: bad }))).toMatch(/bad\.yaml: malformed YAML/);
    const list = file('list.yaml', '- 1\n- 2\n');
    expect(usage(() => resolve({ config: list }))).toMatch(/expected a mapping/);
    const typ = file('typ.yaml', 'allowInsecure: maybe\n');
    expect(usage(() => resolve({ config: typ }))).toMatch(/typ\.yaml: key "allowInsecure": expected true or false/);
    expect(usage(() => resolve({ config: join(dir, 'missing.yaml') }))).toMatch(/missing\.yaml: cannot read config file: no such file/);
  });

  it('rejects bad values with the flag or env name', () => {
    expect(usage(() => resolve({ server: 'localhost:50051' }))).toMatch(/flag --server: expected a URL with http:\/\/ or https:\/\//);
    expect(usage(() => resolve({}, { NAVARCH_SERVER: 'cp.example:50051' }))).toMatch(/env NAVARCH_SERVER: expected a URL/);
    expect(usage(() => resolve({ 'telemetry-interval': '10' }))).toMatch(/flag --telemetry-interval: expected a duration like "30s", got "10"/);
    expect(usage(() => resolve({ 'gpu-backend': 'cuda' }))).toMatch(/flag --gpu-backend: expected one of auto, nvml, fake/);
    expect(usage(() => resolve({ 'http-version': '3' }))).toMatch(/--http-version: expected one of 1\.1, 2/);
    expect(usage(() => resolve({ verdict: 'cel' }))).toMatch(/flag --verdict: expected one of agent, policy, got "cel"/);
    expect(resolve({ verdict: 'policy' }).verdict).toBe('policy');
    expect(resolve({}, { NAVARCH_VERDICT: 'policy' }).verdict).toBe('policy');
    expect(usage(() => resolve({ listen: 'nonsense' }))).toMatch(/flag --listen: expected host:port/);
    expect(usage(() => resolve({ listen: '127.0.0.1:70000' }))).toMatch(/out of range/);
    expect(usage(() => resolve({ 'log-level': 'loud' }))).toMatch(/--log-level: expected one of/);
    expect(usage(() => resolve({ 'client-cert': file('cert.pem', 'x') }))).toMatch(/--client-cert and --client-key must be given together/);
    expect(usage(() => resolve({ scenario: file('s.yaml', 'name: x\nevents: []\n') }))).toMatch(/needs the fake backend/);
    expect(usage(() => resolve({ 'drain-hook': file('hook.sh', 'x') }))).toMatch(/--drain-hook: ".*hook\.sh" is not an executable file/);
  });

  it('resolves the token: flag wins over env, files, systemd credentials', () => {
    const tf = file('token', 'file-token\n');
    expect(resolve({ 'auth-token': 'flag-token' }, { NAVARCH_AUTH_TOKEN: 'env-token' }).authToken).toBe('flag-token');
    expect(resolve({}, { NAVARCH_AUTH_TOKEN: 'env-token' }).authToken).toBe('env-token');
    const c = resolve({ 'auth-token-file': tf }, { NAVARCH_AUTH_TOKEN: 'env-token' });
    expect(c.authToken).toBe('file-token');
    expect(c.authTokenSource).toBe(`file ${tf}`);
    const credDir = mkdtempSync(join(tmpdir(), 'navarch-cred-'));
    writeFileSync(join(credDir, 'auth-token'), 'cred-token');
    expect(resolve({}, { CREDENTIALS_DIRECTORY: credDir }).authToken).toBe('cred-token');
    expect(resolve({}, { CREDENTIALS_DIRECTORY: credDir, NAVARCH_AUTH_TOKEN: 'env-token' }).authToken).toBe('env-token');
  });

  it('rejects unreadable or empty token files in one line', () => {
    expect(usage(() => resolve({ 'auth-token-file': join(dir, 'nope') }))).toMatch(/flag --auth-token-file: cannot read token file ".*nope": no such file/);
    expect(usage(() => resolve({ 'auth-token-file': file('empty', '  \n') }))).toMatch(/is empty/);
    if (process.getuid?.() !== 0) {
      const p = file('noperm', 'x');
      chmodSync(p, 0);
      expect(usage(() => resolve({ 'auth-token-file': p }))).toMatch(/permission denied/);
    }
  });

  it('takes a token over plain http to a remote server (Navarch has no TLS); --require-tls refuses it', () => {
    expect(resolve({ server: 'http://navarch-cp.internal:50051', 'auth-token': 't' }).authToken).toBe('t');
    expect(resolve({ server: 'http://navarch-cp.internal:50051', 'auth-token': 't', 'allow-insecure': true }).authToken).toBe('t');
    expect(usage(() => resolve({ server: 'http://navarch-cp.internal:50051', 'require-tls': true }))).toMatch(
      /refusing plain http:\/\/ to non-loopback host navarch-cp\.internal \(--require-tls\)/,
    );
    expect(resolve({ server: 'https://navarch-cp.internal', 'require-tls': true }).requireTls).toBe(true);
    expect(resolve({ server: 'http://127.0.0.1:50051', 'auth-token': 't' }).authToken).toBe('t');
    expect(resolve({ server: 'https://cp.example', 'auth-token': 't' }).authToken).toBe('t');
  });

  it('honours NAVARCH_FAKE_GPU, STATE_DIRECTORY and kmsg none', () => {
    expect(resolve({}, { NAVARCH_FAKE_GPU: 'true' }).gpuBackend).toBe('fake');
    expect(resolve({}, { NAVARCH_FAKE_GPU: 'TRUE' }).gpuBackend).toBe('auto');
    expect(resolve({ 'gpu-backend': 'nvml' }, { NAVARCH_FAKE_GPU: 'true' }).gpuBackend).toBe('nvml');
    expect(resolve({}, { STATE_DIRECTORY: '/var/lib/x:/var/lib/y' }).stateDir).toBe('/var/lib/x');
    expect(resolve({ 'state-dir': '/tmp/s' }, { STATE_DIRECTORY: '/var/lib/x' }).stateDir).toBe('/tmp/s');
    expect(resolve({ 'kmsg-path': 'none' }).kmsgPath).toBeNull();
  });

  it('parses listen addresses', () => {
    expect(parseListen('0.0.0.0:9400', 'x', true)).toMatchObject({ host: '0.0.0.0', loopback: false, explicit: true });
    expect(parseListen('[::1]:0', 'x', true)).toMatchObject({ host: '::1', port: 0, loopback: true });
    expect(parseListen(':9400', 'x', true)).toMatchObject({ host: '127.0.0.1', port: 9400 });
    expect(parseListen('localhost:1', 'x', true).loopback).toBe(true);
  });
});
