import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * The native C references of tools/native (fill_ref.c, radix_ref.c): built with gcc -O2 into a temporary
 * directory the first time a benchmark asks for one (never into the tree), run in the same process's run so a
 * benchmark can report its ratio to the machine's floor, and removed when the process exits.
 */

/** What running a native reference gave: its JSON output lines, or why it could not run. */
export type NativeRun = { readonly ok: true; readonly lines: ReadonlyArray<Record<string, unknown>> } | { readonly ok: false; readonly reason: string };

/** Extra gcc flags per reference (radix_ref's header asks for x86-64-v2 where the compiler knows it). */
const FLAGS: Record<string, string[]> = { radix_ref: ['-march=x86-64-v2'] };

let buildDir: string | undefined;
const built = new Map<string, string | Error>();

/** tools/native of the checkout this file is in (searched upwards), or undefined outside one. */
function sourceDir(): string | undefined {
  let dir = __dirname;
  for (let i = 0; i < 8; i++) {
    const candidate = join(dir, 'tools', 'native');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return undefined;
}

/** The path of the built reference `name` (fill_ref, radix_ref), or an Error saying why there is none. */
export function nativeReference(name: string): string | Error {
  const cached = built.get(name);
  if (cached !== undefined) return cached;
  const result = build(name);
  built.set(name, result);
  return result;
}

function build(name: string): string | Error {
  const src = sourceDir();
  if (!src || !existsSync(join(src, `${name}.c`))) return new Error(`no tools/native/${name}.c in this checkout`);
  if (!buildDir) {
    buildDir = mkdtempSync(join(tmpdir(), 'kho-native-'));
    const dir = buildDir;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  const out = join(buildDir, name);
  const attempt = (flags: string[]) => spawnSync('gcc', ['-O2', ...flags, '-o', out, join(src, `${name}.c`)], { encoding: 'utf8' });
  let r = attempt(FLAGS[name] ?? []);
  if (r.error) return new Error(`gcc is not available (${(r.error as NodeJS.ErrnoException).code ?? r.error.message})`);
  if (r.status !== 0 && FLAGS[name]) r = attempt([]);
  if (r.status !== 0) return new Error(`gcc failed on ${name}.c: ${(r.stderr || '').split('\n')[0]}`);
  return out;
}

/** Builds (once) and runs reference `name` with `args`; returns the JSON objects it printed, one per line. */
export function runNative(name: string, args: readonly string[], timeoutMs = 600_000): NativeRun {
  const bin = nativeReference(name);
  if (bin instanceof Error) return { ok: false, reason: bin.message };
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 1 << 20 });
  if (r.error) return { ok: false, reason: `${name} did not run: ${r.error.message}` };
  if (r.status !== 0) return { ok: false, reason: `${name} exited with ${r.status}: ${(r.stderr || '').trim().split('\n').pop()}` };
  const lines = r.stdout
    .split('\n')
    .filter((l) => l.trim().startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { ok: true, lines };
}
