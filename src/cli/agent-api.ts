/**
 * How the read commands (status, devices, faults, doctor) reach a running agent: the base URL of
 * its local API (from --api or --listen) and bounded GETs of /status.
 */
import type { AgentStatus } from '../api/types.js';
import { UsageError, type ListenAddress } from '../config/config.js';
import { DEFAULT_API_PORT } from '../config/options.js';

/** Time allowed for one /status answer. */
export const STATUS_TIMEOUT_MS = 3_000;
/** Largest /status body read (a 1024-GPU node with every fault active is well under 4 MiB). */
export const MAX_STATUS_BYTES = 8 * 1024 * 1024;

/** "http://127.0.0.1:19400" for a listen address (a wildcard is reached on loopback). */
export function listenUrl(listen: Pick<ListenAddress, 'host' | 'port'>): string {
  const host = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '::1' : listen.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${listen.port}`;
}

/** The --api value checked (http:// only, no trailing slash), else the URL of `listen`, else the default. */
export function apiBase(api: string | undefined, listen: Pick<ListenAddress, 'host' | 'port'> | null): string {
  if (api !== undefined) {
    let u: URL;
    try {
      u = new URL(api);
    } catch {
      throw new UsageError(`flag --api: expected a URL like "http://127.0.0.1:${DEFAULT_API_PORT}", got "${api}"`);
    }
    if (u.protocol !== 'http:') throw new UsageError(`flag --api: expected an http:// URL, got "${api}"`);
    return api.replace(/\/+$/, '');
  }
  return listenUrl(listen ?? { host: '127.0.0.1', port: DEFAULT_API_PORT });
}

/** What answered on the API address. */
export type ApiProbe =
  | { kind: 'agent'; status: AgentStatus }
  /** Nothing listens there (connection refused). */
  | { kind: 'none'; detail: string }
  /** Something answered, but not as a navarch-agent does (another program holds the port). */
  | { kind: 'other'; detail: string };

function looksLikeAgentStatus(v: unknown): v is AgentStatus {
  const o = v as Partial<AgentStatus> | null;
  return typeof o === 'object' && o !== null && typeof o.agent?.version === 'string' && Array.isArray(o.devices) && Array.isArray(o.activeFaults);
}

function refused(err: unknown): boolean {
  const c = (err as { cause?: { code?: string; errors?: Array<{ code?: string }> } }).cause;
  return c?.code === 'ECONNREFUSED' || (Array.isArray(c?.errors) && c.errors.some((e) => e.code === 'ECONNREFUSED'));
}

/** GET <base>/status, bounded in time and bytes, and say what answered. */
export async function probeApi(base: string, timeoutMs = STATUS_TIMEOUT_MS, cancel?: AbortSignal): Promise<ApiProbe> {
  let res: Response;
  const timeout = AbortSignal.timeout(timeoutMs);
  try {
    res = await fetch(`${base}/status`, { signal: cancel ? AbortSignal.any([timeout, cancel]) : timeout });
  } catch (err) {
    if (refused(err)) return { kind: 'none', detail: 'connection refused' };
    const e = err as Error;
    // fetch refuses a few ports outright (WHATWG "bad port", e.g. 9, 6000): nothing was asked.
    if ((e.cause as Error | undefined)?.message === 'bad port') return { kind: 'none', detail: 'a port fetch() refuses to use ("bad port")' };
    const why = e.name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000} s` : ((e.cause as Error | undefined)?.message ?? e.message);
    return { kind: 'other', detail: why };
  }
  const declared = Number(res.headers.get('content-length') ?? '0');
  if (!res.ok || declared > MAX_STATUS_BYTES) {
    await res.body?.cancel().catch(() => undefined);
    return { kind: 'other', detail: `HTTP ${res.status}${res.ok ? `, body of ${declared} bytes` : ''}` };
  }
  try {
    const text = await readBounded(res, MAX_STATUS_BYTES);
    const body: unknown = JSON.parse(text);
    return looksLikeAgentStatus(body) ? { kind: 'agent', status: body } : { kind: 'other', detail: 'HTTP 200 that is not a navarch-agent status' };
  } catch (err) {
    return { kind: 'other', detail: `HTTP 200 with an unreadable body (${(err as Error).message})` };
  }
}

async function readBounded(res: Response, max: number): Promise<string> {
  if (!res.body) return '';
  const chunks: Uint8Array[] = [];
  let n = 0;
  for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
    n += c.length;
    if (n > max) throw new Error(`larger than ${max} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The running agent's status, null when none answers as one. */
export async function fetchStatus(base: string): Promise<AgentStatus | null> {
  const p = await probeApi(base);
  return p.kind === 'agent' ? p.status : null;
}
