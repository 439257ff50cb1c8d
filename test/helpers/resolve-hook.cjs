/**
 * Test-only resolver hook, loaded with `node --require`: maps the host names in
 * NAVARCH_TEST_HOSTS ("name=127.0.0.1,other=::1") to those loopback addresses, so a test can give
 * the agent a non-loopback *name* without any traffic leaving the machine. Only loopback targets
 * are accepted; every other name resolves as usual.
 */
'use strict';
const dns = require('node:dns');

const map = new Map();
for (const pair of (process.env.NAVARCH_TEST_HOSTS || '').split(',')) {
  const [name, addr] = pair.split('=');
  if (!name || !addr) continue;
  if (addr !== '127.0.0.1' && addr !== '::1') throw new Error(`resolve-hook: ${name} must map to 127.0.0.1 or ::1, not ${addr}`);
  map.set(name.toLowerCase(), addr);
}

const realLookup = dns.lookup;
dns.lookup = function lookup(hostname, options, callback) {
  const cb = typeof options === 'function' ? options : callback;
  const opts = typeof options === 'function' || options === undefined ? {} : typeof options === 'number' ? { family: options } : options;
  const addr = typeof hostname === 'string' ? map.get(hostname.toLowerCase()) : undefined;
  if (addr === undefined) return realLookup.call(dns, hostname, options, callback);
  const family = addr.includes(':') ? 6 : 4;
  process.nextTick(() => (opts.all ? cb(null, [{ address: addr, family }]) : cb(null, addr, family)));
  return {};
};
const realPromise = dns.promises.lookup;
dns.promises.lookup = async function lookup(hostname, options) {
  const addr = typeof hostname === 'string' ? map.get(hostname.toLowerCase()) : undefined;
  if (addr === undefined) return realPromise.call(dns.promises, hostname, options);
  const family = addr.includes(':') ? 6 : 4;
  return options && options.all ? [{ address: addr, family }] : { address: addr, family };
};
