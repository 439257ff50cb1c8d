/**
 * The CLI's command table: names, usage lines and flag sets. Read commands (devices, faults,
 * doctor) take the same settings as `run`.
 */
import { DEFAULT_API_PORT } from '../config/options.js';
import { RUN_FLAGS, type CommandDef, type FlagDef } from './args.js';

const JSON_FLAG: FlagDef = { name: 'json', type: 'bool', help: 'print JSON instead of a table' };
const API_FLAG: FlagDef = {
  name: 'api',
  type: 'string',
  arg: '<url>',
  help: `local API of a running agent (default http://<--listen>, i.e. http://127.0.0.1:${DEFAULT_API_PORT})`,
};
const HELP_FLAG: FlagDef = { name: 'help', type: 'bool', help: 'show this help' };

export const COMMANDS: CommandDef[] = [
  {
    name: 'run',
    summary:
      'Run the agent daemon: watch the GPUs and the kernel log, store health events durably, report them to the Navarch control plane, serve the local API.',
    usage: 'navarch-agent run [flags]',
    flags: [...RUN_FLAGS, HELP_FLAG],
    positionals: [0, 0],
  },
  {
    name: 'status',
    summary:
      "Show the node at a glance: health, backend, driver and CUDA versions, the GPUs, active faults, the control-plane link and the event backlog. Live from a running agent's API, else from a local snapshot and the state directory (it always says which). Exit 0 healthy, 1 degraded, unhealthy or a driver error.",
    usage: 'navarch-agent status [--json] [--watch [--interval 2s]] [--api <url>] [run flags]',
    flags: [
      ...RUN_FLAGS,
      JSON_FLAG,
      API_FLAG,
      { name: 'watch', type: 'bool', help: 'redraw until Ctrl-C (with --json: one JSON line per refresh)' },
      { name: 'interval', type: 'string', arg: '<duration>', help: 'refresh interval with --watch (default 2s, 200ms..1h)' },
      HELP_FLAG,
    ],
    positionals: [0, 0],
  },
  {
    name: 'devices',
    summary:
      'List the GPUs with inventory and live health (from a running agent if its API answers, else a local snapshot; it says which). Exit 0 healthy, 1 degraded, unhealthy or a driver error.',
    usage: 'navarch-agent devices [--api <url>] [--json] [run flags]',
    flags: [...RUN_FLAGS, JSON_FLAG, API_FLAG, HELP_FLAG],
    positionals: [0, 0],
  },
  {
    name: 'faults',
    summary:
      'List active faults (from a running agent\'s API, else from the state directory; it says which). Exit 0 when none is warning or critical, else 1; 1 also when no agent answers and the state directory does not exist. "faults clear <key> | --gpu N | --all" ends them (see: navarch-agent help faults clear).',
    usage: 'navarch-agent faults [--api <url>] [--json] [run flags]  |  navarch-agent faults clear <key> | --gpu N | --all',
    flags: [...RUN_FLAGS, JSON_FLAG, API_FLAG, HELP_FLAG],
    positionals: [0, 0],
  },
  {
    name: 'doctor',
    summary:
      'Check the host (driver, persistence mode, /dev/kmsg, nvidia-fabricmanager on NVSwitch hosts, state directory, local API port, control plane reachable and authorised, clock) and print what to fix; no side effects. Exit 1 if a check fails.',
    usage: 'navarch-agent doctor [--json] [run flags]',
    flags: [...RUN_FLAGS, JSON_FLAG, HELP_FLAG],
    positionals: [0, 0],
  },
  {
    name: 'xid',
    summary: 'Explain an XID code from the catalog (meaning, NVIDIA action, agent classification).',
    usage: 'navarch-agent xid <code> [--json]',
    flags: [JSON_FLAG, HELP_FLAG],
    positionals: [1, 1],
  },
  {
    name: 'inject',
    summary:
      'Inject a fault into a running agent that uses the fake backend (via POST /inject). Faults: xid, ecc, temperature, gpu_lost, nvlink_down, power, pcie_replay, clock_reasons, remapped_rows, fabric, recover.',
    usage: 'navarch-agent inject <fault> [--gpu N] [--xid N] [--celsius C] ... [--api <url>]',
    flags: [
      API_FLAG,
      JSON_FLAG,
      { name: 'listen', type: 'string', arg: '<host:port>', help: 'address of the agent API when --api is not given' },
      { name: 'gpu', type: 'string', arg: '<N>', help: 'GPU index' },
      { name: 'xid', type: 'string', arg: '<N>', help: 'XID code (xid)' },
      { name: 'message', type: 'string', arg: '<text>', help: 'XID message (xid)' },
      { name: 'sbe', type: 'string', arg: '<N>', help: 'single-bit ECC errors (ecc)' },
      { name: 'dbe', type: 'string', arg: '<N>', help: 'double-bit ECC errors (ecc)' },
      { name: 'celsius', type: 'string', arg: '<C>', help: 'temperature (temperature)' },
      { name: 'watts', type: 'string', arg: '<W>', help: 'power draw (power)' },
      { name: 'link', type: 'string', arg: '<N>', help: 'NVLink link (nvlink_down)' },
      { name: 'count', type: 'string', arg: '<N>', help: 'PCIe replay counter (pcie_replay)' },
      { name: 'mask', type: 'string', arg: '<N>', help: 'clock event reason mask (clock_reasons)' },
      { name: 'pending', type: 'bool', help: 'row remap pending (remapped_rows)' },
      { name: 'failure', type: 'bool', help: 'row remap failure (remapped_rows)' },
      { name: 'uncorrected', type: 'string', arg: '<N>', help: 'uncorrectable remapped rows (remapped_rows)' },
      { name: 'state', type: 'string', arg: '<N>', help: 'fabric state 0-3, 3 = completed (fabric)' },
      { name: 'status', type: 'string', arg: '<N>', help: 'fabric probe status, an nvmlReturn_t (fabric)' },
      { name: 'health-mask', type: 'string', arg: '<N>', help: 'fabric health mask, e.g. 0x10 = route unhealthy (fabric)' },
      { name: 'health-summary', type: 'string', arg: '<N>', help: 'fabric health summary: 1 healthy, 2 unhealthy, 3 limited capacity (fabric)' },
      HELP_FLAG,
    ],
    positionals: [1, 1],
  },
  {
    name: 'control-plane',
    summary: 'Run the development control plane (in-memory, speaks the Navarch wire contract).',
    usage: 'navarch-agent control-plane --dev [--port N] [--host H] [--auth-token T] [--health-policy FILE] [--log-level L]',
    flags: [
      { name: 'dev', type: 'bool', help: 'required: this is the development control plane, not Navarch' },
      { name: 'port', type: 'string', arg: '<N>', help: 'port (default 50051; 0 = any free port)' },
      { name: 'host', type: 'string', arg: '<host>', help: 'address to bind (default 127.0.0.1)' },
      { name: 'auth-token', type: 'string', arg: '<token>', help: 'require this bearer token (also NAVARCH_AUTH_TOKEN)' },
      { name: 'health-policy', type: 'string', arg: '<file>', help: "judge events with this Navarch policy YAML (default: Navarch's default policy)" },
      { name: 'log-level', type: 'string', arg: '<level>', help: 'log level (default info)' },
      HELP_FLAG,
    ],
    positionals: [0, 0],
  },
  {
    name: 'demo',
    summary:
      'Dev control plane + an agent on the fake backend in one process, with a short scripted fault scenario (XID 79 on GPU 3, a thermal excursion on GPU 1), printing the control plane view. No GPU needed. Ctrl-C exits.',
    usage: 'navarch-agent demo [--duration 20s] [--json] [--log-level L]',
    flags: [
      { name: 'duration', type: 'string', arg: '<duration>', help: 'exit after this long (default: run until Ctrl-C)' },
      { name: 'log-level', type: 'string', arg: '<level>', help: 'agent log level (default warn)' },
      { name: 'json', type: 'bool', help: 'print the control plane view as JSON lines' },
      HELP_FLAG,
    ],
    positionals: [0, 0],
  },
  {
    name: 'help',
    summary: 'Show help for a command.',
    usage: 'navarch-agent help [command]',
    flags: [],
    positionals: [0, 2],
  },
  {
    name: 'version',
    summary: 'Print the version.',
    usage: 'navarch-agent version',
    flags: [JSON_FLAG],
    positionals: [0, 0],
  },
];

export const COMMAND_BY_NAME = new Map(COMMANDS.map((c) => [c.name, c]));
