/**
 * A small strict argv parser. Accepts `--name value`, `--name=value` and, for compatibility with
 * Navarch's Go node daemon (Go's flag package), `-name value`. Boolean flags take no value
 * (`--json`), or `--json=false`. `--` ends the flags. Unknown flags are a UsageError.
 */
import { UsageError } from '../config/config.js';
import { OPTIONS } from '../config/options.js';

export type FlagType = 'string' | 'bool';

export interface FlagDef {
  name: string;
  type: FlagType;
  help: string;
  /** Placeholder shown in help, e.g. "<url>". */
  arg?: string;
}

export interface CommandDef {
  name: string;
  summary: string;
  usage: string;
  flags: FlagDef[];
  /** Allowed number of positionals [min, max]. */
  positionals: [number, number];
}

export interface ParsedArgs {
  flags: Map<string, string | boolean>;
  positionals: string[];
}

/** The `run` settings as flag definitions. */
export const RUN_FLAGS: FlagDef[] = OPTIONS.map((o) => ({
  name: o.flag,
  type: o.kind === 'bool' ? 'bool' : 'string',
  help: o.help + (o.default !== undefined && o.default !== '' ? ` (default ${o.default})` : ''),
  arg: o.kind === 'bool' ? undefined : o.kind === 'duration' ? '<duration>' : o.kind === 'url' ? '<url>' : o.choices ? `<${o.choices.join('|')}>` : '<value>',
}));

export function parseArgv(argv: readonly string[], cmd: CommandDef): ParsedArgs {
  const defs = new Map(cmd.flags.map((f) => [f.name, f]));
  const flags = new Map<string, string | boolean>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('-') && a.length > 1 && !/^-\d/.test(a)) {
      const body = a.replace(/^--?/, '');
      const eq = body.indexOf('=');
      const name = eq >= 0 ? body.slice(0, eq) : body;
      const def = defs.get(name);
      if (!def) {
        throw new UsageError(`unknown flag "${a.split('=')[0]}" for "${cmd.name}" (see: navarch-agent help ${cmd.name})`);
      }
      if (def.type === 'bool') {
        if (eq >= 0) {
          const v = body.slice(eq + 1).toLowerCase();
          if (v !== 'true' && v !== 'false') throw new UsageError(`flag --${name}: expected true or false, got "${body.slice(eq + 1)}"`);
          flags.set(name, v === 'true');
        } else {
          flags.set(name, true);
        }
        continue;
      }
      if (eq >= 0) {
        flags.set(name, body.slice(eq + 1));
        continue;
      }
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError(`flag --${name} needs a value`);
      flags.set(name, next);
      i++;
      continue;
    }
    positionals.push(a);
  }
  const [min, max] = cmd.positionals;
  if (positionals.length < min) {
    throw new UsageError(`"${cmd.name}" needs ${min === 1 ? 'an argument' : `${min} arguments`}: usage: ${cmd.usage}`);
  }
  if (positionals.length > max) {
    throw new UsageError(`unexpected argument "${positionals[max]}" for "${cmd.name}": usage: ${cmd.usage}`);
  }
  return { flags, positionals };
}

export function helpText(cmd: CommandDef): string {
  const lines = [`usage: ${cmd.usage}`, '', cmd.summary, ''];
  if (cmd.flags.length) {
    lines.push('flags:');
    const rows = cmd.flags.map((f) => [`  --${f.name}${f.arg ? ` ${f.arg}` : ''}`, f.help] as const);
    const w = Math.min(44, Math.max(...rows.map((r) => r[0].length)) + 2);
    for (const [l, h] of rows) lines.push(l.length >= w ? `${l}\n${' '.repeat(w)}${h}` : l.padEnd(w) + h);
  }
  return lines.join('\n');
}
