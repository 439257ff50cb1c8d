/**
 * DNS-rebinding guard of the local API: a request that changes state or returns detail is served
 * only when its Host (and Origin, when a browser sends one) names a loopback host or the address
 * the API listens on. A rebinding page reaches the agent under its own DNS name, so it is refused.
 * When the API listens on a wildcard (0.0.0.0 or ::), any IP literal of this machine's interfaces
 * is allowed too (a rebinding attack needs a DNS name, never an IP literal).
 */
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { isLoopbackHost } from '../util/loopback.js';

export type HostCheck = (host: string | undefined, origin: string | undefined) => string | null;

/** The host part of a Host header value ("name:port", "[::1]:port"), lower case, or null. */
export function hostOf(header: string): string | null {
  try {
    const u = new URL(`http://${header}`);
    if (u.username || u.password || u.pathname !== '/' || u.search || u.hash) return null;
    return u.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  } catch {
    return null;
  }
}

function localAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.add(a.address.toLowerCase());
  return out;
}

/**
 * Builds the check for an API listening on `listenHost`. It returns null when the request may be
 * served, else the reason (for a 403 body).
 */
export function hostCheck(listenHost: string, interfaces: () => Set<string> = localAddresses): HostCheck {
  const listen = listenHost.replace(/^\[|\]$/g, '').toLowerCase();
  const wildcard = listen === '0.0.0.0' || listen === '::' || listen === '';
  const allowed = (h: string): boolean => isLoopbackHost(h) || h === listen || (wildcard && isIP(h) !== 0 && interfaces().has(h));
  return (host, origin) => {
    if (host === undefined || host === '') return 'a Host header is required';
    const h = hostOf(host);
    if (h === null || !allowed(h)) return `Host "${host.slice(0, 100)}" is not this agent (use a loopback name or the listen address)`;
    if (origin !== undefined) {
      let o: string | null;
      try {
        const u = new URL(origin);
        o = u.protocol === 'http:' || u.protocol === 'https:' ? u.hostname.replace(/^\[|\]$/g, '').toLowerCase() : null;
      } catch {
        o = null;
      }
      if (o === null || !allowed(o)) return `Origin "${origin.slice(0, 100)}" is not this agent (cross-site requests are refused)`;
    }
    return null;
  };
}
