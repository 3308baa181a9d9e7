// ESLint: typescript-eslint with type information, import cycle detection, and the layer rule:
// each folder under src/ is a stage and imports only point down (type-only imports too).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';

/**
 * The stages under src/ and the folders each may import from (besides itself). Everything else
 * under src/ is forbidden to it, including the entry files on top (main, daemon, replay) and
 * demo/, which wire the stages together and may import anything.
 */
export const LAYERS = {
  model: [],
  config: ['model'],
  ops: ['model', 'config'],
  rules: ['model', 'config', 'ops'],
  store: ['model', 'config', 'ops'],
  sources: ['model', 'config', 'ops'],
  detect: ['model', 'config', 'ops', 'store'],
  deliver: ['model', 'config', 'ops', 'store'],
};
const TOP = ['./src/main.ts', './src/daemon.ts', './src/replay.ts', './src/demo'];
const layerZones = Object.entries(LAYERS).map(([layer, allowed]) => ({
  target: `./src/${layer}`,
  from: [
    ...Object.keys(LAYERS)
      .filter((other) => other !== layer && !allowed.includes(other))
      .map((other) => `./src/${other}`),
    ...TOP,
  ],
  message: `src/${layer} may import only from ${allowed.length ? allowed.join(', ') : 'nothing else under src/'} (imports point down the stages; see README "Layout")`,
}));

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'bin/', 'eslint.config.js', '.stryker-tmp*/', 'reports/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  importX.flatConfigs.typescript,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    settings: { 'import-x/resolver-next': [createTypeScriptImportResolver({ project: './tsconfig.json' })] },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'import-x/no-cycle': 'error',
      'import-x/no-restricted-paths': ['error', { zones: layerZones }],
      'no-restricted-properties': [
        'error',
        { object: 'it', property: 'only', message: 'no .only left behind' },
        { object: 'describe', property: 'only', message: 'no .only left behind' },
      ],
    },
  },
);
