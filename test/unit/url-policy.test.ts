import { describe, expect, it } from 'vitest';
import { checkControlPlaneUrl, checkTlsFiles, insecureTransportWarning, checkTransport } from '../../src/controlplane/url-policy.js';
import { validateControlPlaneUrl } from '../../src/controlplane/client.js';
import { parseServerUrl, UsageError } from '../../src/config/config.js';

const problem = (s: string): string | null => checkControlPlaneUrl(s).problem;

describe('control-plane URL policy (shared by config and client)', () => {
  it('accepts http(s) URLs with a host and a path', () => {
    expect(checkControlPlaneUrl('https://cp.example/prefix').url?.pathname).toBe('/prefix');
    expect(checkControlPlaneUrl(' http://[::1]:1 ').url?.hostname).toBe('[::1]');
  });

  it('refuses an empty URL, no scheme, other schemes, credentials, query and fragment, echoing no secret', () => {
    expect(problem('')).toMatch(/empty/);
    expect(problem('cp.example:50051')).toMatch(/has no scheme; use http:\/\/cp\.example:50051/);
    expect(problem('ftp://x')).toMatch(/scheme ftp is not supported/);
    expect(problem('http://')).not.toBeNull();
    const cred = problem('https://u:s3cret@cp.example');
    expect(cred).toMatch(/must not carry credentials/);
    expect(cred).not.toContain('s3cret');
    for (const q of ['https://cp.example/a?token=s3cret', 'https://cp.example/a#s3cret']) {
      expect(problem(q)).toMatch(/must not have a query or fragment, got "https:\/\/cp\.example\/a\?\.\.\."/);
      expect(problem(q)).not.toContain('s3cret');
    }
  });

  it('one loopback rule for plain http: allowed with a warning (Navarch has no TLS), refused only with requireTls', () => {
    const remote = new URL('http://navarch-cp.internal:1');
    const local = new URL('http://127.0.0.1:1');
    const sub = new URL('http://cp.localhost:1');
    expect(checkTransport(remote, false)).toBeNull();
    expect(checkTransport(remote, true)).toMatch(/refusing plain http:\/\/ to non-loopback host navarch-cp\.internal \(--require-tls\)/);
    expect(checkTransport(local, true)).toBeNull();
    expect(checkTransport(sub, true)).not.toBeNull(); // *.localhost is not trusted as loopback
    expect(checkTransport(new URL('https://navarch-cp.internal'), true)).toBeNull();
    expect(insecureTransportWarning(remote, true)).toMatch(/navarch-cp\.internal: the auth token and every report travel in clear text.*--require-tls/);
    expect(insecureTransportWarning(remote, false)).toMatch(/every report travels in clear text/);
    expect(insecureTransportWarning(local, true)).toBeNull();
    expect(insecureTransportWarning(new URL('https://navarch-cp.internal'), true)).toBeNull();
    expect(checkTlsFiles(local, true)).toMatch(/need an https:\/\/ URL/);
    expect(checkTlsFiles(new URL('https://x'), true)).toBeNull();
  });

  it('config and client report the same problem', () => {
    for (const bad of ['', 'cp.example:1', 'ftp://x', 'https://u:p@x', 'https://x/?q=1']) {
      const p = problem(bad) as string;
      expect(() => validateControlPlaneUrl(bad, true)).toThrow(p);
      expect(() => parseServerUrl(bad, 'flag --server')).toThrow(new UsageError(`flag --server: ${p}`));
    }
  });
});
