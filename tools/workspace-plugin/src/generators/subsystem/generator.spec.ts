import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { readJson, writeJson, type Tree } from '@nx/devkit';
import { createTreeWithEmptyWorkspace } from '@nx/devkit/testing';
import { subsystemGenerator, subsystemNames } from './generator';

/** The real workspace, whose packages the generated one must match in shape. */
const WORKSPACE = path.resolve(__dirname, '../../../../..');
const real = (file: string): string => readFileSync(path.join(WORKSPACE, file), 'utf-8');

/** An empty Nx workspace configured like this one: a root tsconfig.json of references, and no formatter. */
function emptyWorkspace(): Tree {
  const tree = createTreeWithEmptyWorkspace();
  tree.delete('.oxfmtrc.json');
  writeJson(tree, 'tsconfig.json', { extends: './tsconfig.base.json', files: [], references: [{ path: './packages/kernel' }] });
  return tree;
}

/** Every file under `dir` in the tree, relative to it, sorted. */
function filesUnder(tree: Tree, dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const c of tree.children(d)) {
      const p = `${d}/${c}`;
      if (tree.isFile(p)) out.push(p.slice(dir.length + 1));
      else walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

describe('subsystemNames', () => {
  it.each([
    ['memfd', { fileName: 'memfd', className: 'Memfd', propertyName: 'memfd', constantName: 'MEMFD', subtreeName: 'memfd', magic: '0x464d454d', magicText: 'MEMF' }],
    ['my-subsys', { fileName: 'my-subsys', className: 'MySubsys', propertyName: 'mySubsys', constantName: 'MY_SUBSYS', subtreeName: 'my_subsys', magic: '0x5553594d', magicText: 'MYSU' }],
    ['ab', { fileName: 'ab', className: 'Ab', propertyName: 'ab', constantName: 'AB', subtreeName: 'ab', magic: '0x5f5f4241', magicText: 'AB__' }],
    ['ring2-buf', { fileName: 'ring2-buf', className: 'Ring2Buf', propertyName: 'ring2Buf', constantName: 'RING2_BUF', subtreeName: 'ring2_buf', magic: '0x474e4952', magicText: 'RING' }],
  ])('derives every template name from %s', (name, want) => {
    expect(subsystemNames(name)).toMatchObject(want);
  });

  it.each(['', 'MyThing', 'my_thing', '1st', '-a', 'a-', 'a--b', 'a.b', 'a'.repeat(32)])('refuses %j', (name) => {
    expect(() => subsystemNames(name)).toThrow(
      `subsystem name '${name}' is not valid (wanted kebab-case, 31 characters at most, a letter first, e.g. 'my-subsys')`,
    );
  });

  it('writes the magic so that its little-endian bytes are the four letters', () => {
    const { magic, magicBytes } = subsystemNames('memfd');
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setUint32(0, Number(magic), true);
    expect(new TextDecoder().decode(bytes)).toBe('MEMF');
    expect(magicBytes).toBe('0x4d, 0x45, 0x4d, 0x46');
  });
});

describe('the subsystem generator', () => {
  let tree: Tree;
  beforeEach(async () => {
    tree = emptyWorkspace();
    await subsystemGenerator(tree, { name: 'my-subsys', skipInstall: true });
  });

  it('writes a package wired as a plugin, its files named from the name', () => {
    expect(filesUnder(tree, 'packages/my-subsys')).toEqual([
      'README.md',
      'eslint.config.js',
      'jest.config.cjs',
      'package.json',
      'project.json',
      'src/abi/index.ts',
      'src/index.ts',
      'src/my-subsys.plugin.spec.ts',
      'src/my-subsys.plugin.ts',
      'src/my-subsys.table.spec.ts',
      'src/my-subsys.table.ts',
      'tsconfig.json',
      'tsconfig.lib.json',
      'tsconfig.spec.json',
    ]);
  });

  it('leaves no template syntax behind', () => {
    for (const f of filesUnder(tree, 'packages/my-subsys')) {
      const text = tree.read(`packages/my-subsys/${f}`, 'utf-8')!;
      expect({ f, leftovers: /<%|%>|__tmpl__|__fileName__/.test(text) }).toEqual({ f, leftovers: false });
    }
  });

  it('names the npm package, the Nx project and its layer', () => {
    const pkg = readJson(tree, 'packages/my-subsys/package.json');
    expect(pkg.name).toBe('@kho/my-subsys');
    expect(pkg.exports['.']).toEqual({ '@kho/source': './src/index.ts', types: './dist/index.d.ts', default: './dist/index.js' });
    expect(pkg.exports['./abi']).toEqual({ '@kho/source': './src/abi/index.ts', types: './dist/abi/index.d.ts', default: './dist/abi/index.js' });
    expect(Object.keys(pkg.dependencies)).toEqual(['@kho/kernel', '@kho/kho-core', '@kho/physmem', '@kho/struct', 'reflect-metadata', 'tslib', 'tsyringe']);
    expect(Object.keys(pkg.devDependencies)).toEqual(['@kho/memblock', '@kho/radix-tracker']);
    expect(readJson(tree, 'packages/my-subsys/project.json')).toEqual({
      name: 'my-subsys',
      $schema: '../../node_modules/nx/schemas/project-schema.json',
      sourceRoot: 'packages/my-subsys/src',
      projectType: 'library',
      tags: ['layer:7'],
    });
    expect(tree.read('packages/my-subsys/jest.config.cjs', 'utf-8')).toBe(
      "module.exports = { displayName: '@kho/my-subsys', preset: '../../jest.preset.js' };\n",
    );
  });

  it('fills class, function, constant, file and subtree names', () => {
    const plugin = tree.read('packages/my-subsys/src/my-subsys.plugin.ts', 'utf-8')!;
    expect(plugin).toContain('export class MySubsysPlugin implements KernelPlugin {');
    expect(plugin).toContain("readonly name = 'my-subsys';");
    expect(plugin).toContain('export function mySubsysModule(): KernelModule {');
    expect(plugin).toContain("from './my-subsys.table';");
    const abi = tree.read('packages/my-subsys/src/abi/index.ts', 'utf-8')!;
    expect(abi).toContain("export const MY_SUBSYS_SUBTREE = 'my_subsys';");
    expect(abi).toContain('export const MY_SUBSYS_MAGIC = 0x5553594d;');
    expect(abi).toContain("export const MySubsysHeaderStruct = struct(\n  'my_subsys_header',");
    expect(abi).toContain("export const MySubsysRecordStruct = struct('my_subsys_record', { key: u64big(), value: u64big() }, 16);");
    expect(tree.read('packages/my-subsys/src/index.ts', 'utf-8')).toContain(
      "export { MySubsysPlugin, mySubsysModule } from './my-subsys.plugin';",
    );
    expect(tree.read('packages/my-subsys/src/my-subsys.table.spec.ts', 'utf-8')).toContain('...[0x4d, 0x59, 0x53, 0x55, 1, 0,');
  });

  it('matches the shape of an existing package (packages/memblock)', () => {
    for (const f of ['tsconfig.json', 'tsconfig.spec.json', 'eslint.config.js']) {
      expect(tree.read(`packages/my-subsys/${f}`, 'utf-8')).toBe(real(`packages/memblock/${f}`));
    }
    const mine = readJson(tree, 'packages/my-subsys/package.json');
    const theirs = JSON.parse(real('packages/memblock/package.json'));
    for (const key of ['version', 'license', 'type', 'main', 'types', 'files']) expect(mine[key]).toEqual(theirs[key]);
    expect(mine.exports['.']).toEqual(theirs.exports['.']);
    const lib = readJson(tree, 'packages/my-subsys/tsconfig.lib.json');
    const theirLib = JSON.parse(real('packages/memblock/tsconfig.lib.json'));
    expect({ ...lib, references: undefined }).toEqual({ ...theirLib, references: undefined });
    // Every package the project graph sees it use (spec imports included), as `nx sync` wants them.
    expect(lib.references.map((r: { path: string }) => r.path).sort()).toEqual(
      ['kernel', 'kho-core', 'memblock', 'physmem', 'radix-tracker', 'struct'].map((p) => `../${p}/tsconfig.lib.json`),
    );
  });

  it('adds the package to the root tsconfig.json references, once', async () => {
    expect(readJson(tree, 'tsconfig.json').references).toEqual([{ path: './packages/kernel' }, { path: './packages/my-subsys' }]);
    await subsystemGenerator(tree, { name: 'other', skipInstall: true });
    expect(readJson(tree, 'tsconfig.json').references).toEqual([
      { path: './packages/kernel' },
      { path: './packages/my-subsys' },
      { path: './packages/other' },
    ]);
    const again = emptyWorkspace();
    writeJson(again, 'tsconfig.json', { files: [], references: [{ path: 'packages/third/tsconfig.json' }] });
    await subsystemGenerator(again, { name: 'third', skipInstall: true });
    expect(readJson(again, 'tsconfig.json').references).toEqual([{ path: 'packages/third/tsconfig.json' }]);
  });

  it('refuses an existing package and an invalid name, writing nothing', async () => {
    const before = tree.listChanges().length;
    await expect(subsystemGenerator(tree, { name: 'my-subsys', skipInstall: true })).rejects.toThrow(
      'packages/my-subsys already exists (wanted the name of a new package)',
    );
    await expect(subsystemGenerator(tree, { name: 'My_Subsys', skipInstall: true })).rejects.toThrow("subsystem name 'My_Subsys' is not valid");
    expect(tree.listChanges().length).toBe(before);
  });

  it('returns the npm install task unless skipInstall', async () => {
    expect(await subsystemGenerator(emptyWorkspace(), { name: 'x1', skipInstall: true })).toBeUndefined();
    expect(typeof (await subsystemGenerator(emptyWorkspace(), { name: 'x1' }))).toBe('function');
  });
});
