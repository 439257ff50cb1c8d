import { describe, expect, it } from 'vitest';
import { hostCheck, hostOf } from '../../src/api/host-check.js';
import { isLoopbackHost } from '../../src/util/loopback.js';

describe('isLoopbackHost', () => {
  it('knows localhost, 127/8 and ::1, and nothing else', () => {
    for (const h of ['localhost', 'LOCALHOST', '127.0.0.1', '127.1.2.3', '::1', '[::1]', '::ffff:127.0.0.1']) expect(isLoopbackHost(h), h).toBe(true);
    for (const h of ['evil.example', 'localhost.evil.example', '10.0.0.1', '0.0.0.0', '::', '128.0.0.1', '127.0.0.1.nip.io'])
      expect(isLoopbackHost(h), h).toBe(false);
  });
});

describe('hostCheck', () => {
  const loop = hostCheck('127.0.0.1');
  it('allows loopback names with or without a port, and the listen address', () => {
    expect(hostOf('[::1]:9400')).toBe('::1');
    expect(loop('127.0.0.1:9400', undefined)).toBeNull();
    expect(loop('localhost:9400', 'http://localhost:9400')).toBeNull();
    expect(loop('[::1]:9400', undefined)).toBeNull();
    expect(hostCheck('10.1.2.3')('10.1.2.3:9400', undefined)).toBeNull();
  });
  it('refuses other names, a missing Host and a foreign or opaque Origin', () => {
    expect(loop('evil.example:9400', undefined)).toMatch(/^Host "evil.example:9400" is not this agent/);
    expect(loop(undefined, undefined)).toBe('a Host header is required');
    expect(loop('127.0.0.1:9400', 'http://evil.example')).toMatch(/^Origin "http:\/\/evil.example" is not this agent/);
    expect(loop('127.0.0.1:9400', 'null')).toMatch(/^Origin "null"/);
    expect(loop('a@127.0.0.1', undefined)).not.toBeNull();
    expect(hostCheck('10.1.2.3')('10.9.9.9:9400', undefined)).not.toBeNull();
  });
  it("on a wildcard listen address allows this machine's IP literals, never a DNS name", () => {
    const any = hostCheck('0.0.0.0', () => new Set(['10.1.2.3']));
    expect(any('10.1.2.3:9400', undefined)).toBeNull();
    expect(any('10.9.9.9:9400', undefined)).not.toBeNull();
    expect(any('node.example:9400', undefined)).not.toBeNull();
  });
});
