// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'training/**', '.device/**', 'out/**', '.e2e/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setImmediate: 'readonly', URL: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // the engine is layered: runtime must not know models, model must not know workspaces
      'no-restricted-imports': 'off',
    },
  },
  {
    // the CommonJS launcher that loads the bundle
    files: ['bin/**/*.js'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['engine/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { paths: [{ name: 'vscode', message: 'engine/ is a plain Node program: it must not import vscode.' }] }],
    },
  },
  {
    files: ['engine/hub/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['../cli/*', '../server/*', '../context/*', '../index/*'], message: 'hub/ is below cli/ and server/: it downloads and reads models, it knows nothing of workspaces or commands.' }] }],
    },
  },
  {
    files: ['engine/runtime/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['../model/*', '../kv/*', '../server/*', '../cli/*'], message: 'runtime/ knows nothing of models (imports point one way).' }] }],
    },
  },
);
