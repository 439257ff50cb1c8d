/**
 * The one URL/TLS policy for the control-plane address, used by the config resolver
 * (src/config/config.ts) and the client (src/controlplane/client.ts):
 *  - a scheme is required, http:// or https:// only, with a host;
 *  - no credentials (user:password@), no query, no fragment; no error echoes those parts (they may
 *    hold a secret, and the URL is logged);
 *  - plain http:// is "insecure" to any host but loopback (src/util/loopback.ts): allowed (Navarch
 *    has no TLS) with one warning (insecureTransportWarning), refused only with requireTls;
 *  - TLS files (CA bundle, client certificate) need https://.
 * Each check returns the one-line problem (without a "where" prefix) or null.
 */
import { isLoopbackHost } from '../util/loopback.js';

export { isLoopbackHost };

export type UrlCheck = { url: URL; problem: null } | { url: null; problem: string };

/** Syntax rules of a control-plane base URL. */
export function checkControlPlaneUrl(raw: string): UrlCheck {
  const s = (raw ?? '').trim();
  const bad = (problem: string): UrlCheck => ({ url: null, problem });
  if (s === '') return bad('the control-plane URL is empty; expected a URL with http:// or https:// (e.g. "http://127.0.0.1:50051")');
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) {
    return bad(`expected a URL with http:// or https:// (e.g. "http://cp.example:50051"), got "${s}": it has no scheme; use http://${s} or https://${s}`);
  }
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return bad(`expected a URL with http:// or https:// (e.g. "http://cp.example:50051"), got "${s}": not a valid URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    return bad(`expected a URL with http:// or https://, got "${u.protocol}//...": scheme ${u.protocol.replace(':', '')} is not supported`);
  }
  if (!u.hostname) return bad(`expected a URL with http:// or https:// and a host, got "${u.protocol}//"`);
  if (u.username || u.password) return bad('the URL must not carry credentials (user:password@); use --auth-token-file');
  if (u.search || u.hash) return bad(`the URL must not have a query or fragment, got "${u.origin}${u.pathname}?..."`);
  return { url: u, problem: null };
}

/** True when `url` is plain http:// to a host that is not loopback. */
export function isInsecureTransport(url: URL): boolean {
  return url.protocol === 'http:' && !isLoopbackHost(url.hostname);
}

/**
 * The transport rule: plain http:// to a non-loopback host is allowed, because Navarch's control
 * plane serves only cleartext HTTP/1.1 and h2c (it has no TLS; TLS exists only behind a
 * terminating proxy). With requireTls (--require-tls) it is refused instead.
 */
export function checkTransport(url: URL, requireTls: boolean): string | null {
  if (!requireTls || !isInsecureTransport(url)) return null;
  return `refusing plain http:// to non-loopback host ${url.hostname} (--require-tls): use https:// (a TLS proxy in front of the control plane)`;
}

/**
 * The warning for an insecure transport that is allowed: said once at start, by `doctor` and in
 * the local API's /status. Null when the transport is TLS or loopback.
 */
export function insecureTransportWarning(url: URL, hasToken: boolean): string | null {
  if (!isInsecureTransport(url)) return null;
  const what = hasToken ? 'the auth token and every report travel' : 'every report travels';
  return `plain http:// to non-loopback host ${url.hostname}: ${what} in clear text (Navarch's control plane has no TLS); put a TLS proxy in front and use https://, or pass --require-tls to refuse`;
}

/** TLS files need an https:// URL. */
export function checkTlsFiles(url: URL, hasTlsFiles: boolean): string | null {
  if (!hasTlsFiles || url.protocol === 'https:') return null;
  return `TLS options (--ca-file, --client-cert) need an https:// URL, got ${url.protocol}//`;
}
