// Lint: the type-aware rules that catch what review misses (floating promises, unused code), and
// the layering of src/ (see docs/design.md, "Layers"): an import goes down, never up.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** src/'s layers, top first; a module may import from its own layer and the ones below. */
const LAYERS = [['cli'], ['ops', 'relay', 'api', 'dev'], ['capture', 'webhook'], ['db']];

function layerRules(folder) {
  const level = LAYERS.findIndex((layer) => layer.includes(folder));
  const above = LAYERS.slice(0, level).flat();
  return {
    files: [`src/${folder}/**/*.{ts,tsx}`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: above.map((upper) => ({
            group: [`../${upper}/*`, `../../${upper}/*`],
            message: `src/${folder}/ is below src/${upper}/: move what both need down a layer.`,
          })),
        },
      ],
    },
  };
}

/**
 * The leaf utilities at the top of src/ import nothing of the layers. config.ts is not one: it
 * checks the secrets and the backend URL where it knows who gave them, so it sits with webhook/.
 */
const leafRules = {
  files: ['src/*.ts'],
  ignores: ['src/index.ts', 'src/config.ts'],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          {
            group: LAYERS.flat().map((folder) => `./${folder}/*`),
            message: 'a leaf utility imports no layer above it.',
          },
        ],
      },
    ],
  },
};

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'scratch/', 'coverage/', '.tap/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      '@typescript-eslint/no-floating-promises': 'error',
    },
  },
  ...LAYERS.flat().map(layerRules),
  leafRules,
  {
    files: ['src/config.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['./cli/*', './ops/*', './relay/*', './api/*', './dev/*'],
              message: 'config.ts sits with webhook/: it imports nothing above.',
            },
          ],
        },
      ],
    },
  },
  {
    // Tests read what the CLI printed as JSON and hand tap async callbacks that need no await.
    files: ['test/**/*.{ts,tsx}'],
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafePromises: [{ from: 'package', package: '@tapjs/core', name: 'PromiseWithSubtest' }] },
      ],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      // Handlers and stubs handed to node's servers, destructured helpers, ANSI escapes in patterns.
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false, checksConditionals: false }],
      '@typescript-eslint/unbound-method': 'off',
      '@typescript-eslint/restrict-template-expressions': 'off',
      '@typescript-eslint/no-base-to-string': 'off',
      '@typescript-eslint/no-redundant-type-constituents': 'off',
      'no-control-regex': 'off',
    },
  },
  {
    // The plain-JavaScript launchers and scripts sit outside the TypeScript project.
    files: ['**/*.js'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: {
      parserOptions: { projectService: false, project: null },
      globals: { process: 'readonly', console: 'readonly', URL: 'readonly' },
    },
  },
);
