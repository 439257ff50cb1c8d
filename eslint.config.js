// ESLint (flat config): eslint's and typescript-eslint's recommended rules over src/, test/,
// bench/ and scripts/ (`npm run lint`). Formatting is prettier's job (.prettierrc.json), not a rule here.
//
// Not type-aware: typescript-eslint's recommendedTypeChecked took 71 s on this tree (2 cores),
// against 25 s for this config.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['src/gen/', 'dist/', 'build/', 'node_modules/', 'prebuilds/', 'coverage/', 'tmp/', '.carry/', '.gl/', '.whl/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: globals.node },
    rules: {
      // A leading underscore marks a parameter, binding or caught error that is unused on purpose
      // (an interface's argument, a destructured slot): the codebase's convention.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
      // Off: the codebase rethrows with the caught error's message folded into the new one
      // (`health policy X: no such file`). Adding `{ cause }` as well would print that message
      // twice in logs, since pino's error serializer appends each cause's message.
      'preserve-caught-error': 'off',
      // Off: tests match column layouts literally (`/\n  agent: /`); `{2}` reads worse there.
      'no-regex-spaces': 'off',
    },
  },
  {
    // Tests and benchmarks read JSON whose shape is the thing under test.
    files: ['test/**', 'bench/**'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  {
    // CommonJS: the module resolution hook that Node loads with --require.
    files: ['**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
