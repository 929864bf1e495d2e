// Lint: what a review should never have to catch. Type-aware (each package's tsconfig), so a promise nobody awaits
// or a promise where a callback must return void is an error; == is an error; a line over 160 characters outside a
// string is an error; a long function is a warning.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', 'build/**', 'node_modules/**', '**/*.js', '**/*.mjs', '**/*.d.ts'] },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'max-lines-per-function': ['warn', { max: 60, skipBlankLines: true, skipComments: true }],
      // prettier wraps code at 160; this holds comments to it too. A message or a regex stays whole, so it can be
      // found by grep.
      'max-len': ['error', { code: 160, ignoreStrings: true, ignoreTemplateLiterals: true, ignoreRegExpLiterals: true, ignoreUrls: true }],
    },
  },
  // Test files: tap awaits the subtests it is given (`t.test(...)` queues them; the promise it returns is tap's own).
  { files: ['test/**/*.test.ts'], rules: { '@typescript-eslint/no-floating-promises': 'off' } },
);
