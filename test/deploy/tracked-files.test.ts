// No build products are tracked: a test run rewrites __pycache__/*.pyc (python3 runs the pynvml
// shim and the gpu-check dump), and dist/, build/, prebuilds/ are made by the build.
import { describe, expect, it } from 'vitest';
import { run } from './helpers.js';

describe('tracked files', () => {
  it('git tracks no __pycache__, *.pyc, dist/, build/, prebuilds/ or node_modules/', () => {
    const ls = run('git', ['ls-files', '-z']);
    expect(ls.status).toBe(0);
    const files = ls.stdout.split('\0').filter(Boolean);
    expect(files.length).toBeGreaterThan(100);
    expect(files.filter((f) => /(^|\/)__pycache__\/|\.pyc$|^(dist|build|prebuilds|node_modules)\//.test(f))).toEqual([]);
  });

  it('.gitignore keeps them out', () => {
    for (const p of [
      'test/fake-nvml/pynvml_shim/__pycache__/pynvml.cpython-311.pyc',
      'scripts/gpu-check/__pycache__/x.pyc',
      'dist/cli/main.js',
      'build/Release/x.node',
    ]) {
      expect(run('git', ['check-ignore', '-q', '--no-index', p]).status, p).toBe(0);
    }
  });
});
