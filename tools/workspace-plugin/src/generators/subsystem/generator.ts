import * as path from 'node:path';
import { formatFiles, generateFiles, installPackagesTask, names, updateJson, type GeneratorCallback, type Tree } from '@nx/devkit';
import type { SubsystemGeneratorSchema } from './schema';

/** What the templates under files/ are filled with, all derived from the name given on the command line. */
export interface SubsystemNames {
  /** kebab-case: the directory, the npm name after `@kho/`, the file names, the plugin's and the module's name. */
  readonly fileName: string;
  /** PascalCase, for classes and types (`<className>Plugin`). */
  readonly className: string;
  /** camelCase, for functions (`<propertyName>Module()`). */
  readonly propertyName: string;
  /** UPPER_SNAKE_CASE, for the ABI constants. */
  readonly constantName: string;
  /** snake_case: the subtree's node name in the root FDT (upstream subtree names use underscores). */
  readonly subtreeName: string;
  /** The table magic as a hex literal: the first four letters of the name, upper case, as they read in a hex dump. */
  readonly magic: string;
  /** The same four bytes as a comma-separated list of hex literals, for the golden-bytes test. */
  readonly magicBytes: string;
  /** The four letters of the magic. */
  readonly magicText: string;
}

/** FDT node names are at most 31 characters (devicetree specification, 2.2.1). */
const MAX_NAME = 31;
const KEBAB = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

/**
 * Derives every name the templates use from `name`. Throws an Error naming what was given and what was wanted
 * when `name` is not kebab-case of 1 to 31 characters starting with a letter.
 */
export function subsystemNames(name: string): SubsystemNames {
  if (!KEBAB.test(name) || name.length > MAX_NAME) {
    throw new Error(
      `subsystem name '${name}' is not valid (wanted kebab-case, ${MAX_NAME} characters at most, a letter first, e.g. 'my-subsys')`,
    );
  }
  const n = names(name);
  const letters = name.replace(/-/g, '').toUpperCase().padEnd(4, '_').slice(0, 4);
  const bytes = [...letters].map((c) => c.charCodeAt(0));
  // Little-endian u32 whose bytes in memory are the four letters.
  const value = bytes[0] + bytes[1] * 2 ** 8 + bytes[2] * 2 ** 16 + bytes[3] * 2 ** 24;
  return {
    fileName: n.fileName,
    className: n.className,
    propertyName: n.propertyName,
    constantName: n.constantName,
    subtreeName: name.replace(/-/g, '_'),
    magic: `0x${value.toString(16).padStart(8, '0')}`,
    magicBytes: bytes.map((b) => `0x${b.toString(16)}`).join(', '),
    magicText: letters,
  };
}

/**
 * `nx g ./tools/workspace-plugin:subsystem NAME`: writes packages/NAME (npm @kho/NAME, Nx project NAME, tag
 * layer:7), a subsystem plugin that preserves a versioned record table across a live update, with its tests;
 * adds the package to the root tsconfig.json references; and, unless `skipInstall`, returns the task that runs
 * npm install so package-lock.json records the new workspace package (without it `npm ci` refuses the lock).
 * Throws when the name is invalid or packages/NAME exists.
 */
export async function subsystemGenerator(tree: Tree, options: SubsystemGeneratorSchema): Promise<GeneratorCallback | undefined> {
  const n = subsystemNames(options.name);
  const root = `packages/${n.fileName}`;
  if (tree.exists(root)) throw new Error(`${root} already exists (wanted the name of a new package)`);
  generateFiles(tree, path.join(__dirname, 'files'), root, { ...n, tmpl: '' });
  updateJson(tree, 'tsconfig.json', (json: { references?: Array<{ path: string }> }) => {
    const refs = json.references ?? [];
    if (!refs.some((r) => r.path.replace(/^\.\//, '').replace(/\/tsconfig\.json$/, '') === root)) refs.push({ path: `./${root}` });
    return { ...json, references: refs };
  });
  // A no-op here (the workspace has no formatter); it formats the output if one is ever configured.
  await formatFiles(tree);
  if (options.skipInstall) return undefined;
  return () => installPackagesTask(tree, true);
}

export default subsystemGenerator;
