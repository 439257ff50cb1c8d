import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, closeSync, ftruncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BoundedFileError, readBoundedFileSync, readBoundedTextSync } from '../../src/util/bounded-file.js';
import { parseYamlStrict } from '../../src/util/strict-yaml.js';

const dir = mkdtempSync(join(tmpdir(), 'navarch-bounded-'));

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BoundedFileError);
    return (err as Error).message;
  }
  throw new Error('expected a BoundedFileError');
}

describe('readBoundedFileSync', () => {
  it('reads a regular file whole, up to exactly the limit', () => {
    const p = join(dir, 'ok.txt');
    writeFileSync(p, 'x'.repeat(1000));
    expect(readBoundedTextSync(p, 1000)).toBe('x'.repeat(1000));
    expect(readBoundedFileSync(p, 100_000).length).toBe(1000);
    const empty = join(dir, 'empty');
    writeFileSync(empty, '');
    expect(readBoundedFileSync(empty, 10).length).toBe(0);
  });

  it('refuses a file over the limit from its size, without reading it (a sparse 100 MB file)', () => {
    const p = join(dir, 'big');
    const fd = openSync(p, 'w');
    ftruncateSync(fd, 100 * 1024 * 1024);
    closeSync(fd);
    expect(reason(() => readBoundedFileSync(p, 1024 * 1024))).toBe('larger than 1048576 bytes (104857600 bytes)');
    expect(reason(() => readBoundedFileSync(p, 1000))).toMatch(/^larger than 1000 bytes/);
  });

  it('refuses character devices (/dev/zero, /dev/urandom) as not regular files', () => {
    expect(reason(() => readBoundedFileSync('/dev/zero', 1024))).toBe('a character device, not a regular file');
    expect(reason(() => readBoundedFileSync('/dev/urandom', 1024))).toBe('a character device, not a regular file');
  });

  it('returns at once on a FIFO with no writer (O_NONBLOCK open), refusing it', () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(reason(() => readBoundedFileSync(fifo, 1024))).toBe('a FIFO, not a regular file');
  });

  it('refuses a directory and names OS errors in one short line', () => {
    const d = join(dir, 'sub');
    mkdirSync(d);
    expect(reason(() => readBoundedFileSync(d, 1024))).toBe('a directory, not a regular file');
    expect(reason(() => readBoundedFileSync(join(dir, 'missing'), 1024))).toBe('no such file');
    let code: string | undefined;
    try {
      readBoundedFileSync(join(dir, 'missing'), 1024);
    } catch (err) {
      code = (err as BoundedFileError).code;
    }
    expect(code).toBe('ENOENT');
  });
});

describe('parseYamlStrict', () => {
  it('parses YAML like the library does', () => {
    expect(parseYamlStrict('a: 1\nb: [x, y]\n')).toEqual({ a: 1, b: ['x', 'y'] });
    expect(parseYamlStrict('')).toBeNull();
  });

  it('throws the first warning (an unknown tag) instead of printing it', () => {
    const before = process.listenerCount('warning');
    let warned = 0;
    const onWarn = (): void => void warned++;
    process.on('warning', onWarn);
    try {
      expect(() => parseYamlStrict('server: !!js/function "x"\n')).toThrow(/Unresolved tag: tag:yaml.org,2002:js\/function/);
    } finally {
      process.off('warning', onWarn);
    }
    expect(warned).toBe(0);
    expect(process.listenerCount('warning')).toBe(before);
  });

  it('throws errors and bounds aliases', () => {
    expect(() => parseYamlStrict('a: [1\n')).toThrow();
    const bomb = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 0; i < 8; i++)
      bomb.push(
        `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10)
          .fill(`*${String.fromCharCode(97 + i)}`)
          .join(', ')}]`,
      );
    expect(() => parseYamlStrict(bomb.join('\n'), { maxAliasCount: 100 })).toThrow(/alias/i);
  });
});
