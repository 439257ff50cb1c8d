/**
 * The fault-class table of docs/backends-and-detection.md ("Fault classes: what detects each ...")
 * against the code: every class of FAULT_CLASSES has exactly one row, every row is a class, and
 * every test file a row names exists and names the class (so a row cannot point at a test that
 * does not exercise it): the class itself, a fault key of that class (`gpu0/nvlink/2/errors` for
 * `nvlink/errors`), or, for a two-part class, its last part quoted (`'route_recovery'`). Cells that
 * cite a source have their footnote defined.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { FAULT_CLASSES, faultClassOf } from '../../src/events/fault-class.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DOC = readFileSync(join(ROOT, 'docs', 'backends-and-detection.md'), 'utf8');
const HEADING = '## Fault classes: what detects each, what gpud and DCGM do, what this agent does';
const COLUMNS = ['Class', 'Detected from', 'gpud', 'DCGM', 'This agent', 'Test'];

interface Row {
  cls: string;
  cells: string[];
  tests: string[];
}

const KEY = /(?:gpu\d+|node|nvswitch\d+|pci\/[0-9a-f:.]+)\/[a-z0-9_/]+/g;

/** True when `text` names the class `cls`: the class, a key of it, or its quoted last part. */
function namesClass(text: string, cls: string): boolean {
  if (text.includes(cls)) return true;
  if ([...text.matchAll(KEY)].some((m) => faultClassOf(m[0]) === cls)) return true;
  const last = cls.includes('/') ? cls.slice(cls.lastIndexOf('/') + 1) : null;
  return last !== null && (text.includes(`'${last}'`) || text.includes(`"${last}"`));
}

function tableRows(): Row[] {
  const at = DOC.indexOf(`${HEADING}\n`);
  if (at < 0) throw new Error(`docs/backends-and-detection.md: no "${HEADING}" section`);
  const lines = DOC.slice(at).split('\n');
  const head = lines.findIndex((l) => l.startsWith('| Class |'));
  if (head < 0) throw new Error('docs/backends-and-detection.md: the fault-class table has no header row');
  expect(
    lines[head]!.split('|')
      .slice(1, -1)
      .map((x) => x.trim()),
  ).toEqual(COLUMNS);
  const rows: Row[] = [];
  for (const l of lines.slice(head + 2)) {
    if (!l.startsWith('|')) break;
    const cells = l
      .split('|')
      .slice(1, -1)
      .map((x) => x.trim());
    if (cells.length !== COLUMNS.length) throw new Error(`a fault-class row with ${cells.length} cells, not ${COLUMNS.length}: ${l}`);
    const m = /^`([^`]+)`$/.exec(cells[0]!);
    if (!m) throw new Error(`the class cell must be one \`class\`: ${cells[0]}`);
    const tests = [...cells[5]!.matchAll(/`([^`]+)`/g)].map((x) => x[1]!);
    rows.push({ cls: m[1]!, cells, tests });
  }
  return rows;
}

describe('docs/backends-and-detection.md fault-class table', () => {
  const rows = tableRows();

  it('has one row per class of FAULT_CLASSES, in the order of the code', () => {
    expect(rows.map((r) => r.cls)).toEqual(Object.keys(FAULT_CLASSES));
  });

  it('fills every cell', () => {
    for (const r of rows) for (const [i, cell] of r.cells.entries()) expect(cell, `${r.cls}: ${COLUMNS[i]}`).not.toBe('');
  });

  it('names, per row, test files that exist and name the class', () => {
    for (const r of rows) {
      expect(r.tests.length, `${r.cls}: no test named`).toBeGreaterThan(0);
      for (const t of r.tests) {
        expect(t, `${r.cls}: ${t} is not a test file`).toMatch(/^test\/.+\.test\.ts$/);
        const file = join(ROOT, t);
        expect(existsSync(file), `${r.cls}: ${t} does not exist`).toBe(true);
        expect(namesClass(readFileSync(file, 'utf8'), r.cls), `${r.cls}: ${t} never names the class`).toBe(true);
      }
    }
  });

  it('recognises a class by its name, a key of it or its quoted last part, and nothing looser', () => {
    expect(namesClass("expect(k).toBe('gpu0/nvlink/2/errors')", 'nvlink/errors')).toBe(true);
    expect(namesClass("['route_recovery', 1 << 2]", 'fabric/route_recovery')).toBe(true);
    expect(namesClass('gpu0/nvlink/2 is down; errors rising', 'nvlink/errors')).toBe(false);
    expect(namesClass("'recovery_action'", 'fabric/route_recovery')).toBe(false);
  });

  it('says what the agent does, with a clears verdict, in every row', () => {
    for (const r of rows) expect(r.cells[4], r.cls).toMatch(/clears: (yes|no|n\/a)/);
  });

  it('defines every footnote it cites', () => {
    const section = DOC.slice(DOC.indexOf(HEADING), DOC.indexOf('\n## ', DOC.indexOf(HEADING) + 1));
    const cited = new Set([...section.matchAll(/\[\^(\w+)\](?!:)/g)].map((m) => m[1]!));
    expect(cited.size).toBeGreaterThan(0);
    for (const f of cited) expect(section, `footnote [^${f}]`).toContain(`[^${f}]: `);
  });
});
