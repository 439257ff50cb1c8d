/**
 * The ConnectRPC client for Navarch's ControlPlaneService: Connect protocol, binary protobuf,
 * HTTP/1.1 (keep-alive) or HTTP/2 (h2c over http://, ALPN over https://), bearer token, custom
 * CA bundle and optional client certificate (mTLS), a deadline on every call.
 *
 * Configuration mistakes fail at construction with a one-line ControlPlaneConfigError.
 */
import * as http from 'node:http';
import * as https from 'node:https';
import { createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { ControlPlaneService } from '../gen/navarch/control_plane_pb.js';
import { checkControlPlaneUrl, checkTlsFiles, checkTransport, isLoopbackHost } from './url-policy.js';
import { BoundedFileError, FILE_LIMITS, readBoundedFileSync } from '../util/bounded-file.js';

export { ControlPlaneService };
export type ControlPlaneRpc = Client<typeof ControlPlaneService>;

/** A configuration error: bad URL, bad TLS files, a token over cleartext, ... (one line). */
export class ControlPlaneConfigError extends Error {
  override name = 'ControlPlaneConfigError';
}

export interface ControlPlaneClientOptions {
  /** Base URL with scheme, e.g. "http://10.0.0.5:50051" or "https://cp.example.com". */
  url: string;
  /** Bearer token; no Authorization header when empty/undefined. Never logged. */
  token?: string;
  /** "1.1" (default, keep-alive) or "2" (h2c prior knowledge over http://, ALPN h2 over https://). */
  httpVersion?: '1.1' | '2';
  /** Deadline of every call in ms (default 10000). Sent as Connect-Timeout-Ms too. */
  timeoutMs?: number;
  /** PEM CA bundle (file path or contents) used instead of the system roots for https://. */
  caFile?: string;
  ca?: string | Buffer;
  /** Client certificate and key for mTLS (file paths or contents). */
  certFile?: string;
  cert?: string | Buffer;
  keyFile?: string;
  key?: string | Buffer;
  /** Refuse plain http:// to a non-loopback host (allowed by default: Navarch has no TLS). */
  requireTls?: boolean;
}

export interface ControlPlaneClient {
  readonly rpc: ControlPlaneRpc;
  /** The validated base URL. */
  readonly url: URL;
  readonly httpVersion: '1.1' | '2';
  readonly timeoutMs: number;
  /** Close pooled connections (idle keep-alive sockets, the HTTP/2 session). */
  close(): void;
}

export const DEFAULT_TIMEOUT_MS = 10_000;
/**
 * Largest response body accepted from the control plane, on every RPC (the library default is
 * 4 GiB): a longer one (an endless 200 body, a huge error) fails the call with ResourceExhausted
 * after reading at most this much. Also bounds a compressed body after decompression.
 */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

export { isLoopbackHost };

/**
 * Validates a control-plane base URL by the shared policy (src/controlplane/url-policy.ts): a
 * scheme (http or https), no credentials, query or fragment, and with requireTls no plain http://
 * to a non-loopback host. Returns the parsed URL.
 */
export function validateControlPlaneUrl(raw: string, requireTls = false): URL {
  const c = checkControlPlaneUrl(raw);
  if (c.url === null) throw new ControlPlaneConfigError(`control-plane URL: ${c.problem}`);
  const t = checkTransport(c.url, requireTls);
  if (t !== null) throw new ControlPlaneConfigError(t);
  return c.url;
}

function pem(what: string, file: string | undefined, inline: string | Buffer | undefined): Buffer | undefined {
  if (inline !== undefined && inline !== '') return Buffer.isBuffer(inline) ? inline : Buffer.from(inline);
  if (file === undefined || file === '') return undefined;
  try {
    const b = readBoundedFileSync(file, FILE_LIMITS.pem);
    if (!b.toString('latin1').includes('-----BEGIN ')) {
      throw new ControlPlaneConfigError(`${what} ${file} is not PEM (no "-----BEGIN" line)`);
    }
    return b;
  } catch (e) {
    if (e instanceof ControlPlaneConfigError) throw e;
    const reason = e instanceof BoundedFileError ? (e.code ?? e.message) : (e as Error).message;
    throw new ControlPlaneConfigError(`cannot read ${what} ${file}: ${reason}`);
  }
}

/** Checks a bearer token is a single header-safe line. */
export function validateToken(token: string): void {
  if (/[\r\n]/.test(token)) throw new ControlPlaneConfigError('auth token contains a line break');
  if (!/^[\x21-\x7e]+$/.test(token)) throw new ControlPlaneConfigError('auth token must be printable ASCII without spaces');
}

/** Interceptor adding `Authorization: Bearer <token>` (prefix case-sensitive, one space). */
export function bearerInterceptor(token: string): Interceptor {
  const value = `Bearer ${token}`;
  return (next) => async (req) => {
    req.header.set('Authorization', value);
    return next(req);
  };
}

export function createControlPlaneClient(opts: ControlPlaneClientOptions): ControlPlaneClient {
  const url = validateControlPlaneUrl(opts.url, opts.requireTls === true);
  const httpVersion = opts.httpVersion ?? '1.1';
  if (httpVersion !== '1.1' && httpVersion !== '2') {
    throw new ControlPlaneConfigError(`httpVersion must be "1.1" or "2", not ${JSON.stringify(httpVersion)}`);
  }
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0 || timeoutMs > 600_000) {
    throw new ControlPlaneConfigError(`timeoutMs must be in (0, 600000], got ${timeoutMs}`);
  }
  const ca = pem('CA bundle', opts.caFile, opts.ca);
  const cert = pem('client certificate', opts.certFile, opts.cert);
  const key = pem('client key', opts.keyFile, opts.key);
  if ((cert === undefined) !== (key === undefined)) {
    throw new ControlPlaneConfigError('mTLS needs both a client certificate and a client key');
  }
  const tlsProblem = checkTlsFiles(url, ca !== undefined || cert !== undefined);
  if (tlsProblem !== null) throw new ControlPlaneConfigError(tlsProblem);
  const interceptors: Interceptor[] = [];
  if (opts.token !== undefined && opts.token !== '') {
    validateToken(opts.token);
    interceptors.push(bearerInterceptor(opts.token));
  }
  const baseUrl = url.toString().replace(/\/+$/, '');
  const tls = url.protocol === 'https:' ? { ...(ca ? { ca } : {}), ...(cert ? { cert, key } : {}) } : {};

  if (httpVersion === '2') {
    const sessionManager = new Http2SessionManager(
      baseUrl,
      { pingIntervalMs: 30_000, pingTimeoutMs: Math.min(15_000, timeoutMs), idleConnectionTimeoutMs: 300_000 },
      tls,
    );
    const transport = createConnectTransport({
      baseUrl,
      httpVersion: '2',
      useBinaryFormat: true,
      interceptors,
      defaultTimeoutMs: timeoutMs,
      readMaxBytes: MAX_RESPONSE_BYTES,
      sessionManager,
    });
    return {
      rpc: createClient(ControlPlaneService, transport),
      url,
      httpVersion,
      timeoutMs,
      close: () => sessionManager.abort(),
    };
  }
  const agent =
    url.protocol === 'https:'
      ? new https.Agent({ keepAlive: true, noDelay: true, maxSockets: 4, maxFreeSockets: 2, timeout: 120_000, ...tls })
      : new http.Agent({ keepAlive: true, noDelay: true, maxSockets: 4, maxFreeSockets: 2, timeout: 120_000 });
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: '1.1',
    useBinaryFormat: true,
    interceptors,
    defaultTimeoutMs: timeoutMs,
    readMaxBytes: MAX_RESPONSE_BYTES,
    nodeOptions: { agent },
  });
  return {
    rpc: createClient(ControlPlaneService, transport),
    url,
    httpVersion,
    timeoutMs,
    close: () => agent.destroy(),
  };
}
