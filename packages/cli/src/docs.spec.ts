import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import * as ts from 'typescript';

/**
 * The README snippets are real code: every ```ts block of README.md, packages/*\/README.md and docs/*.md (but
 * docs/writing-a-plugin.md, whose snippets are checked against the sources by the generator's test) is written
 * to a file, type-checked against the workspace's sources with the workspace's compiler settings, and run; a
 * snippet that does not compile, throws, or is pseudocode fails here with its file and line.
 */

const ROOT = resolve(__dirname, '../../..');
const OUT = join(__dirname, '../out-tsc/docs-snippets');
/** Checked by tools/workspace-plugin/src/docs.spec.ts against the sources it quotes. */
const CHECKED_ELSEWHERE = new Set(['docs/writing-a-plugin.md', 'docs/writing-a-file-handler.md']);

interface Snippet {
  readonly doc: string;
  readonly line: number;
  readonly code: string;
  readonly file: string;
}

function docs(): string[] {
  const out = ['README.md'];
  for (const p of readdirSync(join(ROOT, 'packages')).sort()) if (existsSync(join(ROOT, 'packages', p, 'README.md'))) out.push(`packages/${p}/README.md`);
  for (const d of readdirSync(join(ROOT, 'docs')).sort()) if (d.endsWith('.md') && !CHECKED_ELSEWHERE.has(`docs/${d}`)) out.push(`docs/${d}`);
  return out;
}

function snippets(): Snippet[] {
  const out: Snippet[] = [];
  for (const doc of docs()) {
    const lines = readFileSync(join(ROOT, doc), 'utf8').split('\n');
    for (let i = 0; i < lines.length; i++) {
      if (lines[i].trim() !== '```ts') continue;
      const start = i + 1;
      const code: string[] = [];
      for (i++; i < lines.length && lines[i].trim() !== '```'; i++) code.push(lines[i]);
      const file = join(OUT, `${doc.replace(/[/.]/g, '_')}_${start}.ts`);
      out.push({ doc, line: start, code: code.join('\n'), file });
    }
  }
  return out;
}

const all = snippets();

beforeAll(() => {
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  for (const s of all) writeFileSync(s.file, `${s.code}\n`);
});

describe('documentation snippets', () => {
  it('there are snippets in the READMEs and the walkthrough', () => {
    const where = new Set(all.map((s) => s.doc));
    expect(where).toContain('README.md');
    expect(where).toContain('packages/kernel/README.md');
    expect(where).toContain('docs/learning-live-update.md');
  });

  it('every snippet is a module with its imports (no pseudocode)', () => {
    const bare = all.filter((s) => !/^import /m.test(s.code)).map((s) => `${s.doc}:${s.line}`);
    expect(bare).toEqual([]);
  });

  it('every snippet type-checks against the sources, with the workspace settings', () => {
    const config = ts.readConfigFile(join(ROOT, 'tsconfig.base.json'), (f) => readFileSync(f, 'utf8'));
    const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, ROOT);
    const options: ts.CompilerOptions = { ...parsed.options, noEmit: true, composite: false, declaration: false, declarationMap: false, incremental: false };
    const program = ts.createProgram(
      all.map((s) => s.file),
      options,
    );
    // only the snippets are checked (the checker resolves what they use, not every file of the program)
    const files = program.getSourceFiles().filter((f) => resolve(f.fileName).startsWith(OUT));
    expect(files).toHaveLength(all.length);
    const problems = files
      .flatMap((f) => [...program.getSyntacticDiagnostics(f), ...program.getSemanticDiagnostics(f)])
      .map((d) => {
        const s = all.find((x) => resolve(x.file) === resolve(d.file!.fileName))!;
        const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
        return `${s.doc}:${s.line + line}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`;
      });
    expect(problems).toEqual([]);
  }, 120_000);

  it('every snippet runs to its end', () => {
    // one process runs them all in turn (a start-up per snippet would cost more than the snippets)
    const runner = `
      require('reflect-metadata');
      const files = ${JSON.stringify(all.map((s) => s.file))};
      const out = [];
      for (const f of files) {
        try { require(f); out.push({ f, ok: true }); }
        catch (e) { out.push({ f, ok: false, error: String(e && e.stack || e).split('\\n').slice(0, 3).join(' | ') }); }
      }
      process.stdout.write('\\n@@' + JSON.stringify(out));
    `;
    const r = spawnSync(process.execPath, ['--conditions=@kho/source', '-r', require.resolve('@swc-node/register', { paths: [ROOT] }), '-e', runner], {
      cwd: OUT,
      encoding: 'utf8',
      env: { ...process.env, SWC_NODE_PROJECT: join(ROOT, 'tsconfig.base.json') },
      timeout: 120_000,
      maxBuffer: 64 * 2 ** 20,
    });
    expect(r.stderr).toBe('');
    const results = JSON.parse(r.stdout.slice(r.stdout.lastIndexOf('\n@@') + 3)) as Array<{ f: string; ok: boolean; error?: string }>;
    const failed = results.filter((x) => !x.ok).map((x) => {
      const s = all.find((y) => y.file === x.f)!;
      return `${s.doc}:${s.line}: ${x.error}`;
    });
    expect(failed).toEqual([]);
    expect(results).toHaveLength(all.length);
    expect(relative(ROOT, OUT)).toBe('packages/cli/out-tsc/docs-snippets');
  }, 120_000);
});
