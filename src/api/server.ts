/**
 * The agent's local HTTP API (node:http, loopback by default):
 *   GET  /healthz  liveness (200 while the main loop ticks, 503 otherwise)
 *   GET  /status   JSON status document (AgentStatus)
 *   GET  /metrics  Prometheus text format (registry of the agent's own)
 *   POST /inject   fault injection, only with the fake backend (404 otherwise)
 * Every request is bounded: body size, header and request timeouts, connection count.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { InjectValidationError, parseFakeFault } from './inject.js';
import type { AgentMetrics } from './metrics.js';
import type { AgentView } from './types.js';

export const MAX_BODY_BYTES = 64 * 1024;

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

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function createApiHandler(opts: Pick<ApiServerOptions, 'view' | 'metrics' | 'log'>) {
  const { view, metrics, log } = opts;
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
        if (method !== 'POST') throw new HttpError(405, 'use POST');
        const ct = String(req.headers['content-type'] ?? '');
        if (!ct.startsWith('application/json')) throw new HttpError(415, 'Content-Type must be application/json');
        const text = await readBody(req);
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          throw new HttpError(400, 'body is not valid JSON');
        }
        const fault = parseFakeFault(body, view.status().devices.length);
        await view.inject(fault);
        log?.info({ fault }, 'fault injected');
        send(res, 200, { ok: true, fault });
        return;
      }
      throw new HttpError(404, `no such endpoint: ${method} ${path}`);
    } catch (err) {
      if (err instanceof HttpError) {
        if (err.status === 405) res.setHeader('Allow', path === '/inject' ? 'POST' : 'GET');
        send(res, err.status, { error: err.message });
      } else if (err instanceof InjectValidationError) {
        send(res, 400, { error: err.message });
      } else {
        log?.error({ err, path }, 'API request failed');
        send(res, 500, { error: err instanceof Error ? err.message : String(err) });
      }
    }
  };
}

export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const handler = createApiHandler(opts);
  const server: Server = createServer((req, res) => {
    void handler(req, res);
  });
  server.headersTimeout = 5_000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  server.maxConnections = 128;
  server.maxHeadersCount = 64;
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
