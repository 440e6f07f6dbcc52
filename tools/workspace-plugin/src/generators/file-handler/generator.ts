import * as path from 'node:path';
import { formatFiles, generateFiles, installPackagesTask, updateJson, type GeneratorCallback, type Tree } from '@nx/devkit';
import { subsystemNames } from '../subsystem/generator';
import type { FileHandlerGeneratorSchema } from './schema';

/** The handler's compatible is `<name>-v1` and must fit LUO's 48-byte field with its NUL. */
const MAX_COMPATIBLE = 47;

/**
 * `nx g ./tools/workspace-plugin:file-handler NAME`: writes packages/NAME (npm @kho/NAME, Nx project NAME, tag
 * layer:7), a file kind whose files survive a live update through LUO: the file kind, its LUO file handler
 * (`NAME-v1`), a versioned record in `src/abi` and tests through /dev/liveupdate; adds the package to the root
 * tsconfig.json references; and, unless `skipInstall`, returns the npm install task. Throws when the name is
 * invalid or packages/NAME exists.
 */
export async function fileHandlerGenerator(tree: Tree, options: FileHandlerGeneratorSchema): Promise<GeneratorCallback | undefined> {
  const n = subsystemNames(options.name);
  if (`${n.fileName}-v1`.length > MAX_COMPATIBLE) throw new Error(`file kind '${options.name}': its compatible '${n.fileName}-v1' is longer than ${MAX_COMPATIBLE} bytes`);
  const root = `packages/${n.fileName}`;
  if (tree.exists(root)) throw new Error(`${root} already exists (wanted the name of a new package)`);
  generateFiles(tree, path.join(__dirname, 'files'), root, { ...n, tmpl: '' });
  updateJson(tree, 'tsconfig.json', (json: { references?: Array<{ path: string }> }) => {
    const refs = json.references ?? [];
    if (!refs.some((r) => r.path.replace(/^\.\//, '').replace(/\/tsconfig\.json$/, '') === root)) refs.push({ path: `./${root}` });
    return { ...json, references: refs };
  });
  await formatFiles(tree);
  if (options.skipInstall) return undefined;
  return () => installPackagesTask(tree, true);
}

export default fileHandlerGenerator;
