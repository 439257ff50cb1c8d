/** YAML parsing for the agent's input files, with the yaml library's own stderr logging off. */
import { parseDocument } from 'yaml';

/**
 * Parses one YAML document with the library's own logging off (it would print warnings such as
 * an unknown `!!js/function` tag on stderr, as extra lines): its first error or warning is thrown
 * instead, so a bad file is one line and exit 2.
 */
export function parseYamlStrict(text: string, opts: { prettyErrors?: boolean; maxAliasCount?: number } = {}): unknown {
  const doc = parseDocument(text, { ...opts, logLevel: 'silent' });
  const problem = doc.errors[0] ?? doc.warnings[0];
  if (problem) throw new Error(problem.message);
  return doc.toJS({ maxAliasCount: opts.maxAliasCount ?? 100 });
}
