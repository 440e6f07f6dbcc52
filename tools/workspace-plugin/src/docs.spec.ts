import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Tree } from '@nx/devkit';
import { createTreeWithEmptyWorkspace } from '@nx/devkit/testing';
import { fileHandlerGenerator } from './generators/file-handler/generator';
import { subsystemGenerator } from './generators/subsystem/generator';

/**
 * The guides in docs/ may only show code that exists: every ```ts block is preceded by a line
 * `<!-- source: PATH -->` and every run of its lines between `// …` elisions must appear, consecutively, in
 * PATH. PATH is relative to the workspace, `template:FILE` for a file the subsystem generator writes for
 * 'my-subsys', or `handler-template:FILE` for one the file-handler generator writes for 'my-kind'.
 * Lines are compared without their leading and trailing blanks, so a snippet may be re-indented.
 */
const WORKSPACE = path.resolve(__dirname, '../../..');
const GUIDES = ['docs/writing-a-plugin.md', 'docs/writing-a-file-handler.md'];
const ELISION = '// …';

interface Snippet {
  readonly line: number;
  readonly source: string;
  readonly code: readonly string[];
}

function parse(markdown: string): { snippets: Snippet[]; unsourced: number[] } {
  const lines = markdown.split('\n');
  const snippets: Snippet[] = [];
  const unsourced: number[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() !== '```ts') continue;
    const marker = /^<!-- source: (\S+) -->$/.exec(lines[i - 1]?.trim() ?? '');
    const start = i;
    const code: string[] = [];
    for (i++; i < lines.length && lines[i].trim() !== '```'; i++) code.push(lines[i]);
    if (marker) snippets.push({ line: start + 1, source: marker[1], code });
    else unsourced.push(start + 1);
  }
  return { snippets, unsourced };
}

/** The runs of a snippet between elisions, each as trimmed lines. */
function runs(code: readonly string[]): string[][] {
  const out: string[][] = [[]];
  for (const l of code) {
    if (l.trim() === ELISION) out.push([]);
    else out[out.length - 1].push(l.trim());
  }
  return out.filter((r) => r.length > 0);
}

/** The line (1-based) where `run` starts in `text`, or 0. */
function find(text: string, run: readonly string[]): number {
  const lines = text.split('\n').map((l) => l.trim());
  for (let i = 0; i + run.length <= lines.length; i++) {
    let j = 0;
    while (j < run.length && lines[i + j] === run[j]) j++;
    if (j === run.length) return i + 1;
  }
  return 0;
}

let template: Tree;

beforeAll(async () => {
  template = createTreeWithEmptyWorkspace();
  template.delete('.oxfmtrc.json');
  template.write('tsconfig.json', JSON.stringify({ files: [], references: [] }));
  await subsystemGenerator(template, { name: 'my-subsys', skipInstall: true });
  await fileHandlerGenerator(template, { name: 'my-kind', skipInstall: true });
});

function sourceText(source: string): string {
  for (const [prefix, pkg] of [['template:', 'my-subsys'], ['handler-template:', 'my-kind']] as const) {
    if (!source.startsWith(prefix)) continue;
    const text = template.read(`packages/${pkg}/${source.slice(prefix.length)}`, 'utf-8');
    if (text === null) throw new Error(`${source}: the generator writes no such file`);
    return text;
  }
  return readFileSync(path.join(WORKSPACE, source), 'utf-8');
}

describe.each(GUIDES)('%s', (file) => {
  const guide = parse(readFileSync(path.join(WORKSPACE, file), 'utf-8'));

  it('names the source of every TypeScript snippet', () => {
    expect(guide.unsourced).toEqual([]);
    expect(guide.snippets.length).toBeGreaterThan(10);
  });

  it.each(guide.snippets.map((s) => [s.line, s.source, s] as const))('snippet at line %d is copied from %s', (_line, source, snippet) => {
    const text = sourceText(source);
    const missing = runs(snippet.code)
      .filter((run) => find(text, run) === 0)
      .map((run) => run.join('\n'));
    expect(missing).toEqual([]);
  });
});

describe('the snippet check', () => {
  it('would notice a snippet that differs from its source', () => {
    const text = sourceText('packages/memfd/src/memfd.plugin.ts');
    expect(find(text, ["readonly name = 'memfd';"])).toBeGreaterThan(0);
    expect(find(text, ["readonly name = 'memfd';", 'readonly after = [];'])).toBe(0);
  });
});
