/**
 * The agent's local HTTP API (node:http, loopback by default):
 *   GET  /healthz  liveness (200 while the main loop ticks, 503 otherwise)
 *   GET  /status   JSON status document (AgentStatus)
 *   GET  /metrics  Prometheus text format (registry of the agent's own)
 *   POST /inject   fault injection, only with the fake backend (404 otherwise)
 *   POST /faults/clear  an operator's clear of active faults (src/events/operator-clear.ts)
 * Every request is bounded: body size, header and request timeouts, connection count.
 * Connections: at most MAX_CONNECTIONS; a new one beyond that closes the longest-idle connection
 * (one with no request in flight, e.g. a half-open socket that never sent a byte), so idle
 * sockets can never starve /healthz. Headers must arrive within HEADERS_TIMEOUT_MS, a connection
 * with nothing to do is closed after IDLE_TIMEOUT_MS.
 * Every endpoint but /healthz checks Host and Origin (DNS rebinding, see host-check.ts): 403.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { hostCheck, type HostCheck } from './host-check.js';
import type { Logger } from 'pino';
import { InjectValidationError, parseFakeFault } from './inject.js';
import { ClearRequestError, parseClearRequest } from '../events/operator-clear.js';
import type { AgentMetrics } from './metrics.js';
import type { AgentView } from './types.js';

export const MAX_BODY_BYTES = 64 * 1024;
export const MAX_CONNECTIONS = 64;
export const HEADERS_TIMEOUT_MS = 5_000;
export const REQUEST_TIMEOUT_MS = 10_000;
export const IDLE_TIMEOUT_MS = 10_000;
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;

export interface ApiServerOptions {
  host: string;
  port: number;
  view: AgentView;
  metrics: AgentMetrics;
  log?: Logger;
}

export interface ApiServer {
  readonly host: string;
  readonly port: number;
  /** "http://host:port" (IPv6 in brackets). */
  readonly url: string;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  const text = contentType === 'application/json' ? JSON.stringify(body, bigintSafe) + '\n' : String(body);
  res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
  res.end(text);
}

function bigintSafe(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > MAX_BODY_BYTES) {
      reject(new HttpError(413, `body larger than ${MAX_BODY_BYTES} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpError(413, `body larger than ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** The JSON body of a POST (405 for another method, 415 for another Content-Type, 400 for bad JSON). */
async function readJsonPost(req: IncomingMessage, method: string): Promise<unknown> {
  if (method !== 'POST') throw new HttpError(405, 'use POST');
  const ct = String(req.headers['content-type'] ?? '');
  if (!ct.startsWith('application/json')) throw new HttpError(415, 'Content-Type must be application/json');
  const text = await readBody(req);
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'body is not valid JSON');
  }
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function createApiHandler(opts: Pick<ApiServerOptions, 'view' | 'metrics' | 'log'> & { allowHost?: HostCheck }) {
  const { view, metrics, log } = opts;
  const allowHost = opts.allowHost ?? hostCheck('127.0.0.1');
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    const method = req.method ?? 'GET';
    try {
      if (path === '/healthz') {
        if (method !== 'GET' && method !== 'HEAD') throw new HttpError(405, 'use GET');
        const ok = view.alive();
        send(res, ok ? 200 : 503, { ok });
        return;
      }
      const origin = req.headers.origin;
      const refused = allowHost(req.headers.host, Array.isArray(origin) ? origin[0] : origin);
      if (refused !== null) throw new HttpError(403, refused);
      if (path === '/status') {
        if (method !== 'GET') throw new HttpError(405, 'use GET');
        send(res, 200, view.status());
        return;
      }
      if (path === '/metrics') {
        if (method !== 'GET') throw new HttpError(405, 'use GET');
        const m = await metrics.render();
        send(res, 200, m.body, m.contentType);
        return;
      }
      if (path === '/inject' && view.inject) {
        const body = await readJsonPost(req, method);
        const fault = parseFakeFault(body, view.status().devices.length);
        await view.inject(fault);
        log?.info({ fault }, 'fault injected');
        send(res, 200, { ok: true, fault });
        return;
      }
      if (path === '/faults/clear' && view.clearFaults) {
        const { selector, reason } = parseClearRequest(await readJsonPost(req, method));
        const { cleared } = await view.clearFaults(selector, reason);
        if (cleared.length === 0 && 'key' in selector) throw new HttpError(404, `no active fault "${selector.key}"`);
        log?.info({ selector, reason, cleared }, 'faults cleared by the operator');
        send(res, 200, { ok: true, cleared, reason });
        return;
      }
      throw new HttpError(404, `no such endpoint: ${method} ${path}`);
    } catch (err) {
      if (err instanceof HttpError) {
        if (err.status === 405) res.setHeader('Allow', path === '/inject' || path === '/faults/clear' ? 'POST' : 'GET');
        send(res, err.status, { error: err.message });
      } else if (err instanceof InjectValidationError || err instanceof ClearRequestError) {
        send(res, 400, { error: err.message });
      } else {
        log?.error({ err, path }, 'API request failed');
        send(res, 500, { error: err instanceof Error ? err.message : String(err) });
      }
    }
  };
}

export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const handler = createApiHandler({ ...opts, allowHost: hostCheck(opts.host) });
  // Node checks headersTimeout/requestTimeout every connectionsCheckingInterval (30 s by default).
  const server: Server = createServer({ connectionsCheckingInterval: 1_000 }, (req, res) => {
    const conn = conns.get(req.socket);
    if (conn) conn.busy++;
    res.on('close', () => {
      if (conn) {
        conn.busy--;
        conn.lastUsed = Date.now();
      }
    });
    void handler(req, res);
  });
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.timeout = IDLE_TIMEOUT_MS;
  server.maxHeadersCount = 64;
  const conns = new Map<Socket, { busy: number; lastUsed: number }>();
  server.on('connection', (sock: Socket) => {
    if (conns.size >= MAX_CONNECTIONS) {
      // Make room: close the longest-idle connection; if every one is busy, refuse this one.
      let victim: Socket | null = null;
      let oldest = Infinity;
      for (const [s, c] of conns) {
        if (c.busy === 0 && c.lastUsed < oldest) {
          oldest = c.lastUsed;
          victim = s;
        }
      }
      if (victim === null) {
        sock.destroy();
        return;
      }
      conns.delete(victim);
      victim.destroy();
    }
    conns.set(sock, { busy: 0, lastUsed: Date.now() });
    sock.on('close', () => conns.delete(sock));
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host: opts.host, port: opts.port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.address;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`;
  return {
    host,
    port: addr.port,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
      }),
  };
}
