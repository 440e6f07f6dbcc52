// Root ESLint flat config. Every project's eslint.config.js re-exports this one.
// The layer tags (project.json "tags") are the package graph's contract: a package may import only
// from lower layers, so a lower package can never reach a higher one and a cycle cannot lint clean.
const nx = require('@nx/eslint-plugin');

const layers = [
  'layer:0', // kernel
  'layer:1', // struct, image: codecs of byte formats, usable alone
  'layer:2', // physmem; fdt (a byte-format codec whose fixed layouts are declared with struct)
  'layer:3', // kho-core
  'layer:4', // memblock, radix-tracker, kho-block: what a KHO kernel needs to boot, so every layer above can boot one in tests
  'layer:5', // kho-array, vmalloc
  'layer:6', // kstate (and the kstate form of the reserve_mem handover, through memblock's port), liveupdate
  'layer:7', // subsystem plugins (examples, generated ones)
  'layer:8', // cli
];

module.exports = [
  ...nx.configs['flat/base'],
  ...nx.configs['flat/typescript'],
  { ignores: ['**/dist', '**/out-tsc', '**/node_modules', '**/coverage', '**/files/**'] },
  {
    files: ['**/*.ts'],
    rules: {
      '@nx/enforce-module-boundaries': [
        'error',
        {
          enforceBuildableLibDependency: true,
          banTransitiveDependencies: true,
          allow: [],
          depConstraints: [
            ...layers.map((tag, i) => ({ sourceTag: tag, onlyDependOnLibsWithTags: layers.slice(0, i) })),
            { sourceTag: "scope:tools", onlyDependOnLibsWithTags: ["*"] },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Injected classes must be value imports: `import type` erases the decorator metadata tsyringe reads.
      '@typescript-eslint/consistent-type-imports': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
  {
    files: ['**/*.cjs', '**/*.js'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
];
