/**
 * `navarch-agent faults clear <key> | --gpu N | --all [--reason TEXT]`: ends active faults of a
 * running agent through its local API (POST /faults/clear). Each clear is stored as an event and
 * sent to the control plane by the agent. Exit codes: 0 cleared (or nothing on that GPU / node),
 * 1 no such active fault or no agent answering, 2 bad usage (one line).
 */
import { UsageError, parseListen } from '../config/config.js';
import { DEFAULT_API_PORT } from '../config/options.js';
import { apiBase } from './agent-api.js';
import { ClearRequestError, parseClearRequest } from '../events/operator-clear.js';
import type { CommandDef, ParsedArgs } from './args.js';
import type { CliIo } from './io.js';

export const FAULTS_CLEAR_COMMAND: CommandDef = {
  name: 'faults clear',
  summary:
    'End active faults of the running agent (POST /faults/clear): one by its key (as `navarch-agent faults --json` lists it), every fault of one GPU (--gpu -1: the node-level ones), or all. Each clear is stored and sent to the control plane; a fault that is still there is raised again by the next detection.',
  usage: 'navarch-agent faults clear <key> | --gpu N | --all [--reason TEXT] [--api <url>] [--json]',
  flags: [
    { name: 'gpu', type: 'string', arg: '<N>', help: 'clear every active fault of GPU N (-1: node-level faults)' },
    { name: 'all', type: 'bool', help: 'clear every active fault' },
    { name: 'reason', type: 'string', arg: '<text>', help: 'why, recorded with each clear (default "operator")' },
    { name: 'api', type: 'string', arg: '<url>', help: 'local API of the running agent (default http://<--listen>)' },
    { name: 'listen', type: 'string', arg: '<host:port>', help: `address of the agent API when --api is not given (default 127.0.0.1:${DEFAULT_API_PORT})` },
    { name: 'json', type: 'bool', help: 'print the API answer as JSON' },
    { name: 'help', type: 'bool', help: 'show this help' },
  ],
  positionals: [0, 1],
};

/** The request body the arguments stand for; UsageError (exit 2) when they do not make one. */
export function clearRequestFromArgs(args: ParsedArgs): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  const key = args.positionals[0];
  const gpu = args.flags.get('gpu');
  const all = args.flags.get('all') === true;
  const given = [key !== undefined, gpu !== undefined, all].filter(Boolean).length;
  if (given !== 1) throw new UsageError(`faults clear: give exactly one of <key>, --gpu N or --all: usage: ${FAULTS_CLEAR_COMMAND.usage}`);
  if (key !== undefined) body.key = key;
  if (typeof gpu === 'string') {
    if (!/^-?\d{1,4}$/.test(gpu.trim())) throw new UsageError(`faults clear: flag --gpu: expected a GPU index, got "${gpu}"`);
    body.gpu = Number(gpu);
  }
  if (all) body.all = true;
  const reason = args.flags.get('reason');
  if (typeof reason === 'string') body.reason = reason;
  try {
    parseClearRequest(body);
  } catch (err) {
    if (err instanceof ClearRequestError) throw new UsageError(`faults clear: ${err.message}`);
    throw err;
  }
  return body;
}

function baseOf(args: ParsedArgs): string {
  const api = args.flags.get('api');
  const listen = args.flags.get('listen');
  return apiBase(typeof api === 'string' ? api : undefined, typeof listen === 'string' ? parseListen(listen, 'flag --listen', true) : null);
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

export async function runFaultsClear(args: ParsedArgs, io: CliIo): Promise<number> {
  const body = clearRequestFromArgs(args);
  const base = baseOf(args);
  let res: Response;
  try {
    res = await fetch(`${base}/faults/clear`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    const c = (err as { cause?: { code?: string; errors?: Array<{ code?: string }> } }).cause;
    const cause = c?.code ?? c?.errors?.[0]?.code ?? (err as Error).name;
    io.stderr(`navarch-agent: faults clear: no running agent answers at ${base} (${cause}); nothing was cleared\n`);
    return 1;
  }
  const text = await res.text();
  let answer: { ok?: boolean; cleared?: string[]; error?: string } = {};
  try {
    answer = JSON.parse(text) as typeof answer;
  } catch {
    // not JSON: reported below
  }
  if (!res.ok) {
    const msg = oneLine(answer.error ?? text).slice(0, 300);
    if (res.status === 404 && body.key !== undefined && answer.error?.startsWith('no active fault')) {
      io.stderr(`navarch-agent: faults clear: ${msg} (active faults: navarch-agent faults)\n`);
      return 1;
    }
    if (res.status === 404) {
      io.stderr(`navarch-agent: faults clear: the agent at ${base} has no /faults/clear (an older version?)\n`);
      return 1;
    }
    io.stderr(`navarch-agent: faults clear: rejected (HTTP ${res.status}): ${msg}\n`);
    return res.status === 400 ? 2 : 1;
  }
  const cleared = Array.isArray(answer.cleared) ? answer.cleared : [];
  if (args.flags.get('json') === true) {
    io.stdout(`${JSON.stringify(answer)}\n`);
    return 0;
  }
  if (cleared.length === 0) io.stdout(`no active faults to clear${body.gpu !== undefined ? ` on GPU ${String(body.gpu)}` : ''}\n`);
  for (const k of cleared) io.stdout(`cleared ${k}\n`);
  return 0;
}
