/**
 * The client: URL and option validation (one-line errors), bearer header, and HTTPS with a
 * custom CA bundle and mTLS over HTTP/1.1 and HTTP/2 (ALPN) against a real TLS server on
 * loopback (certificates made with openssl at test time).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { Code, ConnectError, type ConnectRouter } from '@connectrpc/connect';
import { connectNodeAdapter } from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlPlaneConfigError, createControlPlaneClient, isLoopbackHost, validateControlPlaneUrl } from '../../src/controlplane/client.js';
import { ControlPlaneService } from '../../src/gen/navarch/control_plane_pb.js';
import { isConfigError, validateServerInterval } from '../../src/controlplane/agent-link.js';
import { backoffMs, exponentialMs, jittered } from '../../src/util/backoff.js';

describe('URL and option validation', () => {
  it('requires a scheme', () => {
    expect(() => validateControlPlaneUrl('control-plane.example.com:50051')).toThrow(/has no scheme; use http:\/\/control-plane/);
    expect(() => validateControlPlaneUrl('localhost:50051')).toThrow(ControlPlaneConfigError);
    expect(() => validateControlPlaneUrl('')).toThrow(/empty/);
    expect(() => validateControlPlaneUrl('ftp://x')).toThrow(/not supported/);
  });

  it('allows http:// to a non-loopback host (Navarch has no TLS) unless requireTls', () => {
    expect(() => validateControlPlaneUrl('http://navarch-cp.internal:50051', true)).toThrow(
      /refusing plain http:\/\/ to non-loopback host navarch-cp\.internal/,
    );
    expect(validateControlPlaneUrl('http://navarch-cp.internal:50051').host).toBe('navarch-cp.internal:50051');
    expect(validateControlPlaneUrl('http://127.0.0.1:50051').port).toBe('50051');
    expect(validateControlPlaneUrl('http://[::1]:1').hostname).toBe('[::1]');
    expect(validateControlPlaneUrl('https://cp.example.com/prefix').pathname).toBe('/prefix');
    for (const h of ['localhost', '127.0.0.1', '127.9.9.9', '[::1]', '::1']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['10.0.0.1', 'example.com', '128.0.0.1', 'localhost.evil.com']) expect(isLoopbackHost(h), h).toBe(false);
  });

  it('rejects credentials in the URL, bad tokens, bad TLS files, TLS over http, half mTLS, bad timeouts', () => {
    expect(() => createControlPlaneClient({ url: 'http://u:p@127.0.0.1:1' })).toThrow(/credentials/);
    expect(() => createControlPlaneClient({ url: 'http://127.0.0.1:1', token: 'a b' })).toThrow(/printable ASCII/);
    expect(() => createControlPlaneClient({ url: 'http://127.0.0.1:1', token: 'a\nb' })).toThrow(/line break/);
    expect(() => createControlPlaneClient({ url: 'https://x.example', caFile: '/nonexistent/ca.pem' })).toThrow(
      /cannot read CA bundle \/nonexistent\/ca\.pem: ENOENT/,
    );
    expect(() => createControlPlaneClient({ url: 'https://x.example', caFile: '/etc/hostname' })).toThrow(/not PEM/);
    expect(() => createControlPlaneClient({ url: 'http://127.0.0.1:1', ca: '-----BEGIN CERTIFICATE-----' })).toThrow(/need an https:\/\/ URL/);
    expect(() => createControlPlaneClient({ url: 'https://x.example', cert: '-----BEGIN CERTIFICATE-----' })).toThrow(
      /both a client certificate and a client key/,
    );
    expect(() => createControlPlaneClient({ url: 'http://127.0.0.1:1', timeoutMs: 0 })).toThrow(/timeoutMs/);
    expect(() => createControlPlaneClient({ url: 'http://127.0.0.1:1', httpVersion: '3' as never })).toThrow(/httpVersion/);
    // Every message is one line.
    try {
      validateControlPlaneUrl('nope');
    } catch (e) {
      expect((e as Error).message).not.toContain('\n');
    }
  });

  it('interval validation, backoff with full jitter, +-10% jitter', () => {
    expect(validateServerInterval(0, 30_000)).toEqual({ ms: 30_000, adjusted: true });
    expect(validateServerInterval(-5, 30_000).ms).toBe(30_000);
    expect(validateServerInterval(Number.NaN, 30_000).ms).toBe(30_000);
    expect(validateServerInterval(10_000_000, 30_000).ms).toBe(3_600_000);
    expect(validateServerInterval(5, 30_000)).toEqual({ ms: 5000, adjusted: false });
    expect(backoffMs(0, 500, 30_000, () => 0.999)).toBeLessThanOrEqual(500);
    expect(backoffMs(20, 500, 30_000, () => 0.999)).toBeLessThanOrEqual(30_000);
    expect(backoffMs(20, 500, 30_000, () => 0.999)).toBeGreaterThan(29_000);
    expect(backoffMs(3, 500, 30_000, () => 0)).toBe(10);
    expect(jittered(1000, () => 0)).toBe(900);
    expect(jittered(1000, () => 1)).toBe(1100);
    // The kernel-log source's steps: capped exponential, and +-50 % around it.
    expect([0, 1, 6, 40].map((n) => exponentialMs(n, 250, 30_000))).toEqual([250, 500, 16_000, 30_000]);
    expect(jittered(400, () => 0, 0.5)).toBe(200);
    expect(jittered(400, () => 1, 0.5)).toBe(600);
  });
});

const haveOpenssl = spawnSync('openssl', ['version']).status === 0;
if (!haveOpenssl) console.warn('[client.test] skipping TLS tests: openssl not found (needed to make test certificates)');

describe.skipIf(!haveOpenssl)('HTTPS with a custom CA and mTLS', () => {
  let dir = '';
  let server: http2.Http2SecureServer;
  let url = '';
  const seen: Array<{ alpn: string | false; clientCN: string | null; auth: string | undefined }> = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cp-tls-'));
    const o = (...args: string[]): void => {
      execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
    };
    o('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=test-ca');
    writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    o('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
    o('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'san.ext');
    o('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=node-a');
    o('x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', '-days', '2');
    const routes = (router: ConnectRouter): void => {
      router.service(ControlPlaneService, {
        registerNode: (req, ctx) => {
          if (!req.nodeId) throw new ConnectError('node_id is required', Code.InvalidArgument);
          void ctx;
          return { success: true, message: 'registration successful' };
        },
      });
    };
    const adapter = connectNodeAdapter({ routes });
    server = http2.createSecureServer(
      {
        key: readFileSync(join(dir, 'server.key')),
        cert: readFileSync(join(dir, 'server.pem')),
        ca: readFileSync(join(dir, 'ca.pem')),
        requestCert: true,
        rejectUnauthorized: false,
        allowHTTP1: true,
      },
      (req, res) => {
        const sock = req.socket as TLSSocket;
        const peer = sock.getPeerCertificate?.();
        seen.push({
          alpn: sock.alpnProtocol ?? false,
          clientCN: sock.authorized && peer?.subject ? String(peer.subject.CN) : null,
          auth: req.headers.authorization,
        });
        (adapter as unknown as (a: unknown, b: unknown) => void)(req, res);
      },
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const httpVersion of ['1.1', '2'] as const) {
    it(`HTTP/${httpVersion}: custom CA bundle verifies the server, client certificate presented, bearer sent`, async () => {
      const c = createControlPlaneClient({
        url,
        httpVersion,
        caFile: join(dir, 'ca.pem'),
        certFile: join(dir, 'client.pem'),
        keyFile: join(dir, 'client.key'),
        token: 'tls-token',
        timeoutMs: 5000,
      });
      try {
        const before = seen.length;
        const r = await c.rpc.registerNode({ nodeId: 'node-a' });
        expect(r.success).toBe(true);
        const s = seen[before]!;
        expect(s.alpn).toBe(httpVersion === '2' ? 'h2' : false);
        expect(s.clientCN).toBe('node-a');
        expect(s.auth).toBe('Bearer tls-token');
      } finally {
        c.close();
      }
    });
  }

  it('without the CA bundle the server certificate is refused (unavailable, not silently accepted)', async () => {
    const c = createControlPlaneClient({ url, timeoutMs: 5000 });
    try {
      const err = await c.rpc.registerNode({ nodeId: 'node-a' }).then(
        () => null,
        (e: unknown) => ConnectError.from(e),
      );
      expect(err).not.toBeNull();
      expect([Code.Unavailable, Code.Internal]).toContain(err!.code);
      expect(err!.message).toMatch(/certificate/i);
      expect(isConfigError(err!)).toBe(true);
    } finally {
      c.close();
    }
  });

  it('without a client certificate the server sees no authorized peer', async () => {
    const c = createControlPlaneClient({ url, caFile: join(dir, 'ca.pem'), timeoutMs: 5000 });
    try {
      const before = seen.length;
      await c.rpc.registerNode({ nodeId: 'node-a' });
      expect(seen[before]!.clientCN).toBeNull();
    } finally {
      c.close();
    }
  });
});
