/**
 * The ConnectRPC client for Navarch's ControlPlaneService: Connect protocol, binary protobuf,
 * HTTP/1.1 (keep-alive) or HTTP/2 (h2c over http://, ALPN over https://), bearer token, custom
 * CA bundle and optional client certificate (mTLS), a deadline on every call.
 *
 * Configuration mistakes fail at construction with a one-line ControlPlaneConfigError.
 */
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { Code, ConnectError, createClient, type Client, type Interceptor } from '@connectrpc/connect';
import { compressionBrotli, compressionGzip, createConnectTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { validateReadWriteMaxBytes, type UniversalClientFn, type UniversalClientRequest, type UniversalClientResponse } from '@connectrpc/connect/protocol';
import { createTransport } from '@connectrpc/connect/protocol-connect';
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import {
  ControlPlaneService,
  HeartbeatRequestSchema,
  HeartbeatResponseSchema,
  ReportHealthRequestSchema,
  ReportHealthResponseSchema,
} from '../gen/navarch/control_plane_pb.js';

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
  /** Allow http:// to a non-loopback host (the token would travel in cleartext). */
  allowInsecure?: boolean;
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

/** True for localhost, 127.0.0.0/8 and ::1. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  if (/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)) return true;
  if (/^::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h)) return true;
  return false;
}

/**
 * Validates a control-plane base URL: a scheme is required (http or https), http:// is refused to
 * a non-loopback host unless allowInsecure. Returns the parsed URL (no trailing slash in path).
 */
export function validateControlPlaneUrl(raw: string, allowInsecure = false): URL {
  const s = (raw ?? '').trim();
  if (s === '') throw new ControlPlaneConfigError('control-plane URL is empty; use e.g. http://127.0.0.1:50051');
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(s)) {
    throw new ControlPlaneConfigError(
      `control-plane URL "${s}" has no scheme; use http://${s} (loopback or --allow-insecure) or https://${s}`,
    );
  }
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new ControlPlaneConfigError(`control-plane URL "${s}" is not a valid URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new ControlPlaneConfigError(`control-plane URL "${s}": scheme ${u.protocol.replace(':', '')} is not supported (http or https)`);
  }
  if (u.username || u.password) {
    throw new ControlPlaneConfigError(`control-plane URL must not carry credentials; use the auth token option`);
  }
  if (u.search || u.hash) {
    throw new ControlPlaneConfigError(`control-plane URL "${s}" must not have a query or fragment`);
  }
  if (u.protocol === 'http:' && !allowInsecure && !isLoopbackHost(u.hostname)) {
    throw new ControlPlaneConfigError(
      `refusing plain http:// to non-loopback host ${u.hostname}: use https:// or set allowInsecure (--allow-insecure)`,
    );
  }
  return u;
}

function pem(what: string, file: string | undefined, inline: string | Buffer | undefined): Buffer | undefined {
  if (inline !== undefined && inline !== '') return Buffer.isBuffer(inline) ? inline : Buffer.from(inline);
  if (file === undefined || file === '') return undefined;
  try {
    const b = readFileSync(file);
    if (!b.toString('latin1').includes('-----BEGIN ')) {
      throw new ControlPlaneConfigError(`${what} ${file} is not PEM (no "-----BEGIN" line)`);
    }
    return b;
  } catch (e) {
    if (e instanceof ControlPlaneConfigError) throw e;
    throw new ControlPlaneConfigError(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
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

/** Node's network errors as Connect errors (refused / unreachable -> Unavailable, reset -> Aborted), cause kept. */
export function connectErrorFromNetwork(reason: unknown): ConnectError {
  if (reason instanceof ConnectError) return reason;
  const codes: string[] = [];
  for (let e = reason as { code?: unknown; cause?: unknown } | undefined, i = 0; e && i < 8; e = e.cause as typeof e, i++) {
    if (typeof e.code === 'string') codes.push(e.code);
  }
  let code = Code.Internal;
  if (codes.some((c) => c === 'ECONNRESET' || c === 'ERR_STREAM_DESTROYED' || c === 'ERR_STREAM_WRITE_AFTER_END' || c === 'EPIPE')) code = Code.Aborted;
  else if (codes.some((c) => c === 'ECONNREFUSED' || c === 'ETIMEDOUT' || c === 'ENOTFOUND' || c === 'EAI_AGAIN' || c === 'EHOSTUNREACH' || c === 'ENETUNREACH')) code = Code.Unavailable;
  const ce = ConnectError.from(reason, code);
  if (ce !== reason) ce.cause = reason;
  return ce;
}

/**
 * The HTTP/1.1 client under the Connect transport. Unary Connect calls only (all the agent
 * makes): the request body is one message, so it is sent with Content-Length, headers and body
 * in one write on a keep-alive socket (Nagle off). connect-node's own client flushes the headers
 * first and streams the body chunked: three writes per call, each a wake-up of the server.
 */
export function createUnaryHttp1Client(agent: http.Agent, secure: boolean): UniversalClientFn {
  const request = secure ? https.request : http.request;
  return async function unaryHttp1(req: UniversalClientRequest): Promise<UniversalClientResponse> {
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (req.body) {
      for await (const c of req.body) {
        chunks.push(c);
        size += c.byteLength;
      }
    }
    const body = chunks.length === 1 ? (chunks[0] as Uint8Array) : Buffer.concat(chunks, size);
    const headers: http.OutgoingHttpHeaders = {};
    req.header.forEach((v, k) => {
      headers[k] = v;
    });
    headers['content-length'] = String(size);
    const signal = req.signal;
    return new Promise<UniversalClientResponse>((resolve, reject) => {
      if (signal?.aborted) {
        reject(connectErrorFromNetwork(signal.reason));
        return;
      }
      let res: http.IncomingMessage | null = null;
      let settled = false;
      const fail = (e: unknown): void => {
        cleanup();
        const ce = connectErrorFromNetwork(e);
        r.destroy(ce);
        res?.destroy(ce);
        if (!settled) {
          settled = true;
          reject(ce);
        }
      };
      const onAbort = (): void => fail(signal?.reason ?? new ConnectError('the operation was aborted', Code.Canceled));
      const cleanup = (): void => signal?.removeEventListener('abort', onAbort);
      const r = request(req.url, { method: req.method, headers, agent });
      signal?.addEventListener('abort', onAbort);
      r.on('error', fail);
      r.on('response', (incoming) => {
        res = incoming;
        incoming.on('error', fail);
        incoming.on('end', cleanup);
        const header = new Headers();
        for (const [k, v] of Object.entries(incoming.headers)) {
          if (Array.isArray(v)) for (const x of v) header.append(k, x);
          else if (v !== undefined) header.set(k, v);
        }
        settled = true;
        resolve({
          status: incoming.statusCode ?? 0,
          header,
          body: incoming as AsyncIterable<Uint8Array>,
          trailer: new Headers(),
        });
      });
      r.end(body);
    });
  };
}

/** Largest response body a unary call reads (the control plane's answers are a few bytes). */
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

const CODE_BY_NAME = new Map<string, Code>(
  Object.entries(Code)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => [k.replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase(), v as Code]),
);

/** Connect's mapping of an HTTP status without a Connect error body to a code. */
function codeFromHttpStatus(status: number): Code {
  switch (status) {
    case 400:
      return Code.Internal;
    case 401:
      return Code.Unauthenticated;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.Unimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.Unavailable;
    default:
      return Code.Unknown;
  }
}

/** Options of a call (what AgentLink passes; the same names as connect's CallOptions). */
export interface LeanCallOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

/**
 * A Connect-protocol unary call (binary protobuf, HTTP/1.1, keep-alive) without connect's
 * per-call machinery: for the delivery hot path (ReportHealth, SendHeartbeat). It sends the
 * same request connect does (POST /navarch.ControlPlaneService/<Method>, application/proto,
 * Connect-Protocol-Version 1, Connect-Timeout-Ms, bearer) in one write with Content-Length, and
 * reads the answer or the Connect error (JSON {code, message}; else the code from the HTTP
 * status). Deadline: the call's timeoutMs (default the client's); then DeadlineExceeded.
 * On this project's loopback benchmark it halves the client's CPU per call (connect: about
 * 1.15 ms, this: 0.57 ms on the shared 2-core VM) and cuts the round trip's p99.
 */
export function createLeanUnary<I extends DescMessage, O extends DescMessage>(
  agent: http.Agent,
  secure: boolean,
  url: string,
  input: I,
  output: O,
  headers: Record<string, string>,
  defaultTimeoutMs: number,
): (req: MessageInitShape<I> | MessageShape<I>, o?: LeanCallOptions) => Promise<MessageShape<O>> {
  const request = secure ? https.request : http.request;
  return (req, o = {}) =>
    new Promise<MessageShape<O>>((resolve, reject) => {
      const timeoutMs = o.timeoutMs !== undefined && o.timeoutMs > 0 ? o.timeoutMs : defaultTimeoutMs;
      let body: Uint8Array;
      try {
        const msg = (req as { $typeName?: string }).$typeName === input.typeName ? (req as MessageShape<I>) : create(input, req as MessageInitShape<I>);
        body = toBinary(input, msg);
      } catch (e) {
        reject(ConnectError.from(e, Code.Internal));
        return;
      }
      const signal = o.signal;
      if (signal?.aborted) {
        reject(new ConnectError('the operation was aborted', Code.Canceled));
        return;
      }
      let done = false;
      const finish = (e: ConnectError | null, v?: MessageShape<O>): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (e) {
          r.destroy();
          reject(e);
        } else resolve(v as MessageShape<O>);
      };
      const onAbort = (): void => finish(new ConnectError('the operation was aborted', Code.Canceled));
      const timer = setTimeout(() => finish(new ConnectError('the operation timed out', Code.DeadlineExceeded)), timeoutMs);
      const r = request(url, {
        method: 'POST',
        agent,
        headers: { ...headers, 'connect-timeout-ms': String(timeoutMs), 'content-length': String(body.byteLength) },
      });
      signal?.addEventListener('abort', onAbort);
      r.on('error', (e) => finish(connectErrorFromNetwork(e)));
      r.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('error', (e) => finish(connectErrorFromNetwork(e)));
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) {
            finish(new ConnectError(`response larger than ${MAX_RESPONSE_BYTES} bytes`, Code.ResourceExhausted));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => {
          if (done) return;
          const data = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
          const status = res.statusCode ?? 0;
          const type = String(res.headers['content-type'] ?? '');
          if (status === 200 && type.startsWith('application/proto')) {
            try {
              finish(null, fromBinary(output, data));
            } catch (e) {
              finish(new ConnectError(`cannot decode the answer: ${(e as Error).message}`, Code.Internal));
            }
            return;
          }
          let code = status === 200 ? Code.Unknown : codeFromHttpStatus(status);
          let message = status === 200 ? `unexpected content type "${type}"` : `HTTP ${status}`;
          if (type.startsWith('application/json')) {
            try {
              const j = JSON.parse(data.toString('utf8')) as { code?: unknown; message?: unknown };
              if (typeof j.code === 'string') code = CODE_BY_NAME.get(j.code) ?? code;
              if (typeof j.message === 'string') message = j.message;
            } catch {
              // not a Connect error body: the HTTP status decides
            }
          }
          finish(new ConnectError(message, code));
        });
      });
      r.end(body);
    });
}

export function createControlPlaneClient(opts: ControlPlaneClientOptions): ControlPlaneClient {
  const url = validateControlPlaneUrl(opts.url, opts.allowInsecure === true);
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
  if (url.protocol === 'http:' && (ca || cert)) {
    throw new ControlPlaneConfigError(`TLS options (CA bundle, client certificate) need an https:// URL, got ${url.protocol}//`);
  }
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
  // The Connect protocol over our unary HTTP/1.1 client, with connect-node's defaults otherwise.
  const transport = createTransport({
    baseUrl,
    httpClient: createUnaryHttp1Client(agent, url.protocol === 'https:'),
    useBinaryFormat: true,
    interceptors,
    defaultTimeoutMs: timeoutMs,
    acceptCompression: [compressionGzip, compressionBrotli],
    sendCompression: null,
    ...validateReadWriteMaxBytes(undefined, undefined, undefined),
  });
  const rpc = createClient(ControlPlaneService, transport);
  // The delivery hot path without connect's per-call machinery (the other calls keep it).
  const headers: Record<string, string> = { 'content-type': 'application/proto', 'connect-protocol-version': '1' };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const secure = url.protocol === 'https:';
  const method = (name: string): string => `${baseUrl}/${ControlPlaneService.typeName}/${name}`;
  const reportHealth = createLeanUnary(agent, secure, method('ReportHealth'), ReportHealthRequestSchema, ReportHealthResponseSchema, headers, timeoutMs);
  const sendHeartbeat = createLeanUnary(agent, secure, method('SendHeartbeat'), HeartbeatRequestSchema, HeartbeatResponseSchema, headers, timeoutMs);
  Object.assign(rpc, { reportHealth, sendHeartbeat });
  return {
    rpc,
    url,
    httpVersion,
    timeoutMs,
    close: () => agent.destroy(),
  };
}
