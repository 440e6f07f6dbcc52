import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { readJson, writeJson, type Tree } from '@nx/devkit';
import { createTreeWithEmptyWorkspace } from '@nx/devkit/testing';
import { fileHandlerGenerator } from './generator';

const WORKSPACE = path.resolve(__dirname, '../../../../..');
const real = (file: string): string => readFileSync(path.join(WORKSPACE, file), 'utf-8');

function emptyWorkspace(): Tree {
  const tree = createTreeWithEmptyWorkspace();
  tree.delete('.oxfmtrc.json');
  writeJson(tree, 'tsconfig.json', { extends: './tsconfig.base.json', files: [], references: [{ path: './packages/kernel' }] });
  return tree;
}

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

describe('the file-handler generator', () => {
  let tree: Tree;
  beforeEach(async () => {
    tree = emptyWorkspace();
    await fileHandlerGenerator(tree, { name: 'my-kind', skipInstall: true });
  });

  it('writes a file kind, its LUO handler, a versioned record and their tests', () => {
    expect(filesUnder(tree, 'packages/my-kind')).toEqual([
      'README.md',
      'eslint.config.js',
      'jest.config.cjs',
      'package.json',
      'project.json',
      'src/abi/index.ts',
      'src/index.ts',
      'src/my-kind.file.ts',
      'src/my-kind.handler.spec.ts',
      'src/my-kind.handler.ts',
      'tsconfig.json',
      'tsconfig.lib.json',
      'tsconfig.spec.json',
    ]);
    for (const f of filesUnder(tree, 'packages/my-kind')) {
      expect({ f, leftovers: /<%|%>|__tmpl__|__fileName__/.test(tree.read(`packages/my-kind/${f}`, 'utf-8')!) }).toEqual({ f, leftovers: false });
    }
  });

  it('fills the names: handler class, module, compatible, record struct and magic', () => {
    const h = tree.read('packages/my-kind/src/my-kind.handler.ts', 'utf-8')!;
    expect(h).toContain('export class MyKindHandler implements LiveupdateFileHandler {');
    expect(h).toContain('readonly compatible = MY_KIND_LUO_COMPATIBLE;');
    expect(h).toContain('export function myKindModule(): KernelModule {');
    expect(h).toContain('c.register(LiveupdateFileHandler, { useToken: MyKindHandler });');
    const abi = tree.read('packages/my-kind/src/abi/index.ts', 'utf-8')!;
    expect(abi).toContain("export const MY_KIND_LUO_COMPATIBLE = 'my-kind-v1';");
    expect(abi).toContain("export const MyKindLuoSerStruct = struct('my_kind_luo_ser', { magic: u32(), version: u32(), size: u64(), data: u64() }, 24);");
    expect(abi).toContain('export const MY_KIND_MAGIC = 0x494b594d;');
  });

  it('names the package, its layer and dependencies like the workspace packages', () => {
    const pkg = readJson(tree, 'packages/my-kind/package.json');
    expect(pkg.name).toBe('@kho/my-kind');
    expect(Object.keys(pkg.dependencies)).toEqual(['@kho/kernel', '@kho/kho-core', '@kho/liveupdate', '@kho/physmem', '@kho/struct', 'reflect-metadata', 'tslib', 'tsyringe']);
    expect(readJson(tree, 'packages/my-kind/project.json').tags).toEqual(['layer:7']);
    for (const f of ['tsconfig.json', 'tsconfig.spec.json', 'eslint.config.js']) expect(tree.read(`packages/my-kind/${f}`, 'utf-8')).toBe(real(`packages/memfd/${f}`));
    expect(readJson(tree, 'tsconfig.json').references).toEqual([{ path: './packages/kernel' }, { path: './packages/my-kind' }]);
  });

  it('refuses an existing package, an invalid name and a compatible that does not fit LUO, writing nothing', async () => {
    const before = tree.listChanges().length;
    await expect(fileHandlerGenerator(tree, { name: 'my-kind', skipInstall: true })).rejects.toThrow('packages/my-kind already exists');
    await expect(fileHandlerGenerator(tree, { name: 'My_Kind', skipInstall: true })).rejects.toThrow("subsystem name 'My_Kind' is not valid");
    await expect(fileHandlerGenerator(emptyWorkspace(), { name: 'a'.repeat(30) + '-b', skipInstall: true })).rejects.toThrow();
    expect(tree.listChanges().length).toBe(before);
  });
});
