import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { Errno, KernelError, describeError, parseSize } from '@kho/kernel';
import { MAX_PAGE_ORDER, PAGE_SIZE } from '@kho/physmem';
import { RESERVE_MEM_MAX, RESERVE_MEM_NAME_MAX } from '@kho/memblock';
import { MEMFD_MAX_FILES, MEMFD_MAX_FILE_SIZE, MEMFD_NAME_MAX } from '@kho/memfd';
import { KHO_TEST_LOG_REGION } from '../demo/kho-test';
import { TRACKER_KINDS } from '../system';
import { WORKLOAD_OBJECTS_MAX, WORKLOAD_PAYLOAD_MAX } from './workload';
import { LuoGenerationSchema } from './luo';
import { GUESTS_MAX } from './guests';

/** A size: bytes as a number, or a string with a K, M, G or T suffix as on a kernel command line. */
const size = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  try {
    return parseSize(v, 'size');
  } catch {
    ctx.addIssue({ code: 'custom', message: `'${v}' is not a size (wanted bytes, or a number with a K, M, G or T suffix)` });
    return z.NEVER;
  }
});
const pageMultiple = size.refine((n) => n % PAGE_SIZE === 0, { message: `must be a multiple of the page size (${PAGE_SIZE})` });
const order = z.number().int().min(0).max(MAX_PAGE_ORDER);

const folios = z
  .object({
    /** Bytes of folios to allocate, fill with seeded random bytes and preserve. */
    total: pageMultiple.refine((n) => n > 0, { message: 'must be above 0' }),
    minOrder: order.default(0),
    maxOrder: order.default(MAX_PAGE_ORDER),
  })
  .strict()
  .refine((f) => f.minOrder <= f.maxOrder, { message: 'minOrder must not be above maxOrder', path: ['minOrder'] });

const positive = size.refine((n) => n > 0, { message: 'must be above 0' });

/** Items of a list whose `name` repeats get an issue on that name. */
function uniqueNames(what: string) {
  return (items: ReadonlyArray<{ name: string }>, ctx: z.RefinementCtx): void => {
    const seen = new Set<string>();
    items.forEach((it, i) => {
      if (seen.has(it.name)) ctx.addIssue({ code: 'custom', message: `${what} '${it.name}' is listed twice`, path: [i, 'name'] });
      seen.add(it.name);
    });
  };
}

const vmallocArea = z
  .object({
    /** Bytes of the area, filled with seeded bytes (any positive size: the last page is partly used). */
    size: positive,
    /** Map it with 2 MiB blocks (order 9) instead of pages. */
    huge: z.boolean().default(false),
  })
  .strict();

const reserveMemName = z
  .string()
  .regex(new RegExp(`^[A-Za-z0-9_.,+-]{1,${RESERVE_MEM_NAME_MAX}}$`), { message: `must be 1..${RESERVE_MEM_NAME_MAX} characters of [A-Za-z0-9_.,+-]` })
  .refine((n) => n !== KHO_TEST_LOG_REGION, { message: `'${KHO_TEST_LOG_REGION}' is the self-test's log region` });

const reserveMemRegion = z
  .object({
    name: reserveMemName,
    size: pageMultiple.refine((n) => n > 0, { message: 'must be above 0' }),
    align: size.refine((n) => n >= PAGE_SIZE && (n & (n - 1)) === 0 && n <= 2 ** 30, { message: `must be a power of two from ${PAGE_SIZE} to 1G` }).default(PAGE_SIZE),
  })
  .strict();

const kstateObjects = z
  .object({
    /** Objects to register with KState (each its own instance). */
    objects: z.number().int().min(1).max(WORKLOAD_OBJECTS_MAX),
    /** Bytes of seeded payload per object, in a folio (0: none). */
    size: size.refine((n) => n <= WORKLOAD_PAYLOAD_MAX, { message: `must be at most ${WORKLOAD_PAYLOAD_MAX} (one folio of order ${MAX_PAGE_ORDER})` }).default(0),
  })
  .strict();

const memfdFile = z
  .object({
    name: z.string().refine((n) => n.length > 0 && !/[/\0]/.test(n) && new TextEncoder().encode(n).length <= MEMFD_NAME_MAX, {
      message: `must be 1..${MEMFD_NAME_MAX} bytes of UTF-8 without '/' or NUL`,
    }),
    size: positive.refine((n) => n <= MEMFD_MAX_FILE_SIZE, { message: `must be at most ${MEMFD_MAX_FILE_SIZE} (1G)` }),
    /** Write only every other 64 KiB (the odd chunks), leaving holes. */
    sparse: z.boolean().default(false),
  })
  .strict();

/** Guest memory: `size` bytes of folios of `order`, preserved one by one but never filled (see scenario/guests.ts). */
const guest = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,32}$/, { message: 'must be 1..32 characters of [A-Za-z0-9_.-]' }),
    size: pageMultiple.refine((n) => n > 0, { message: 'must be above 0' }),
    /** Folio order: 9 for a guest backed by 2 MiB pages, 0 for 4 KiB pages. */
    order: order.default(0),
  })
  .strict()
  // (only for a valid order: zod still runs this refinement when the order itself was refused)
  .refine((g) => !(Number.isInteger(g.order) && g.order >= 0 && g.order <= MAX_PAGE_ORDER) || g.size % (PAGE_SIZE * 2 ** g.order) === 0, {
    message: 'must be a whole number of folios (4 KiB × 2^order each)',
    path: ['size'],
  });

const preserve = z
  .object({
    folios: folios.optional(),
    guests: z.array(guest).max(GUESTS_MAX).superRefine(uniqueNames('guest')).optional(),
    vmalloc: z.array(vmallocArea).max(64).optional(),
    reserveMem: z.array(reserveMemRegion).max(RESERVE_MEM_MAX).superRefine(uniqueNames('region')).optional(),
    kstate: kstateObjects.optional(),
    memfd: z.array(memfdFile).max(MEMFD_MAX_FILES).superRefine(uniqueNames('file')).optional(),
  })
  .strict();

const generation = z
  .object({
    /** What this generation's kernel preserves before its kexec. */
    preserve: preserve.default({}),
    /** LUO: sessions of memfds a process preserves through /dev/liveupdate, misuse checks, injected failures (see luo.ts). */
    luo: LuoGenerationSchema.optional(),
    /** Command line of the kernel booted by this generation's kexec (default: the scenario's). */
    cmdline: z.string().optional(),
    /** This many generations alike, one after the other (each with its own seed). */
    repeat: z.number().int().min(1).max(1000).optional(),
  })
  .strict();

const range = z.object({ start: size, size: pageMultiple, node: z.number().int().min(0).max(63) }).strict();

/** Names of the `reserve_mem=` regions a command line asks for. */
function cmdlineRegions(cmdline: string): string[] {
  return [...cmdline.matchAll(/(?:^|\s)reserve_mem=(\S*)/g)].map((m) => m[1].split(':')[2] ?? '');
}

type RawScenario = { cmdline: string; generations: ReadonlyArray<z.output<typeof generation>> };

/**
 * A region keeps its size and alignment for the whole chain (once declared it stays on every later command line,
 * see {@link regionsOf}); its name is not also asked for by a `reserve_mem=` of a command line; and every kernel
 * has at most RESERVE_MEM_MAX regions, those of its command line included.
 */
function checkRegions(s: RawScenario, ctx: z.RefinementCtx): void {
  const first = new Map<string, { size: number; align: number; at: string }>();
  const onCmdline = new Set([s.cmdline, ...s.generations.map((g) => g.cmdline ?? '')].flatMap(cmdlineRegions));
  s.generations.forEach((g, i) => {
    (g.preserve.reserveMem ?? []).forEach((r, j) => {
      const path = ['generations', i, 'preserve', 'reserveMem', j];
      const at = `generations[${i}].preserve.reserveMem[${j}]`;
      if (onCmdline.has(r.name)) {
        ctx.addIssue({ code: 'custom', message: `region '${r.name}' is also asked for by a reserve_mem= of a command line (declare it in one place)`, path: [...path, 'name'] });
        return;
      }
      const f = first.get(r.name);
      if (!f) {
        first.set(r.name, { size: r.size, align: r.align, at });
        if (first.size + onCmdline.size > RESERVE_MEM_MAX) {
          ctx.addIssue({ code: 'custom', message: `one region too many: a kernel takes at most ${RESERVE_MEM_MAX} reserve_mem regions, those of its command line included (a declared region stays on every later command line)`, path: [...path, 'name'] });
        }
        return;
      }
      for (const k of ['size', 'align'] as const) {
        if (r[k] !== f[k]) {
          ctx.addIssue({ code: 'custom', message: `region '${r.name}' has ${k} ${f[k]} at ${f.at} (a region keeps its size and alignment for the whole chain)`, path: [...path, k] });
        }
      }
    });
  });
}

/** The scenario file's schema (JSON or YAML). */
export const ScenarioSchema = z
  .object({
    name: z.string().min(1).optional(),
    seed: z.number().int().min(0).max(2 ** 32 - 1).default(1),
    machine: z
      .object({
        ram: size.optional(),
        nodes: z.number().int().min(1).max(64).optional(),
        ranges: z.array(range).min(1).optional(),
      })
      .strict()
      .refine((m) => !(m.ranges && (m.ram !== undefined || m.nodes !== undefined)), { message: 'give either ranges or ram/nodes, not both' })
      .default({}),
    /** Kernel command line of every boot unless a generation overrides it (e.g. "kho_scratch=64M,64M,64M"). */
    cmdline: z.string().default(''),
    /** The preserved-memory tracker of every kernel (see TRACKER_KINDS). */
    tracker: z.enum(TRACKER_KINDS, { error: `Invalid input: expected ${TRACKER_KINDS.map((t) => `"${t}"`).join(', ')}` }).default('radix'),
    /** Each generation preserves something and kexecs into the next; the last kernel restores and verifies. */
    generations: z
      .array(generation)
      .min(1)
      .refine((gens) => gens.reduce((n, g) => n + (g.repeat ?? 1), 0) <= 1000, { message: 'at most 1000 generations, repeats included' }),
  })
  .strict()
  // checked on the file's generations, before repeats are unrolled, so that paths name what the file says
  .superRefine(checkRegions)
  .transform(({ generations, ...s }) => ({ ...s, generations: generations.flatMap(({ repeat, ...g }) => Array.from({ length: repeat ?? 1 }, () => g)) }));

export type Scenario = z.output<typeof ScenarioSchema>;
export type ScenarioGeneration = Scenario['generations'][number];
export type ScenarioPreserve = ScenarioGeneration['preserve'];

/**
 * The reserve_mem regions the kernel of generation `gen` has (generation g's kernel is booted by generation
 * g-1's kexec; the first is booted cold): every region declared by generations 1..gen, in the order first
 * declared. The rule: a region, once declared, stays on the command line of every later kernel of the chain,
 * so it is revived at the same address by each of them (and the kernel after the one that writes it always
 * has it to verify it).
 */
export function regionsOf(s: Scenario, gen: number): Array<{ name: string; size: number; align: number }> {
  const out = new Map<string, { name: string; size: number; align: number }>();
  for (const g of s.generations.slice(0, gen)) for (const r of g.preserve.reserveMem ?? []) if (!out.has(r.name)) out.set(r.name, r);
  return [...out.values()];
}

/** Line and column (1-based) of character `pos` of `text`. */
function lineColumn(text: string, pos: number): { line: number; column: number } {
  const before = text.slice(0, Math.max(0, Math.min(pos, text.length)));
  const line = before.split('\n').length;
  return { line, column: before.length - before.lastIndexOf('\n') };
}

/**
 * The offset of the first character where `text` stops being JSON (JSON.parse of Node 20 does not say where):
 * a small recursive-descent reader over the grammar of RFC 8259, which it only has to follow until it fails.
 */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++;
  };
  const fail = (): never => {
    throw i;
  };
  const lit = (word: string): void => {
    for (const c of word) {
      if (text[i] !== c) fail();
      i++;
    }
  };
  const str = (): void => {
    i++; // the opening quote
    while (i < text.length && text[i] !== '"') {
      if (text[i] < ' ') fail();
      if (text[i] === '\\') {
        i++;
        if (text[i] === 'u') {
          for (let k = 1; k <= 4; k++) {
            if (!/[0-9a-fA-F]/.test(text[i + k] ?? '')) {
              i += k;
              fail();
            }
          }
          i += 4;
        } else if (!'"\\/bfnrt'.includes(text[i] ?? 'x')) fail();
      }
      i++;
    }
    if (i >= text.length) fail();
    i++;
  };
  const num = (): void => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i));
    if (!m) fail();
    i += m![0].length;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      ws();
      if (text[i] === '}') return void i++;
      for (;;) {
        ws();
        if (text[i] !== '"') fail();
        str();
        ws();
        if (text[i] !== ':') fail();
        i++;
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') return void i++;
        else fail();
      }
    }
    if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') return void i++;
      for (;;) {
        value();
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') return void i++;
        else fail();
      }
    }
    if (c === '"') return str();
    if (c === 't') return lit('true');
    if (c === 'f') return lit('false');
    if (c === 'n') return lit('null');
    return num();
  };
  try {
    value();
    ws();
    return i < text.length ? i : -1;
  } catch (at) {
    return typeof at === 'number' ? Math.min(at, text.length) : 0;
  }
}

/** A JSON.parse error as "line L, column C: what". */
function jsonError(e: unknown, text: string): string {
  // JSON.parse (no reviver) throws only SyntaxError, whose message is the parser's own text
  const msg = e instanceof SyntaxError ? e.message : describeError(e);
  // Node 20: `Unexpected token ',', "...context..." is not valid JSON`; later versions add a position
  const what = msg
    .replace(/, (\.\.\.)?".*" is not valid JSON$/s, '')
    .replace(/ in JSON at position \d+.*$/s, '')
    .replace(/^Unexpected end of JSON input$/, 'the text ends before the JSON does');
  const pos = jsonErrorOffset(text);
  if (pos < 0) return what;
  const { line, column } = lineColumn(text, pos);
  return `line ${line}, column ${column}: ${what}`;
}

/** A YAML parse error as "line L, column C: what" (the library's code frame and position suffix dropped). */
function yamlError(e: unknown): string {
  const err = e as { message?: string; linePos?: Array<{ line: number; col: number }> };
  const what = String(err.message ?? e).split('\n')[0].replace(/ at line \d+, column \d+:?$/, '').replace(/:$/, '');
  const p = err.linePos?.[0];
  return p ? `line ${p.line}, column ${p.col}: ${what}` : what;
}

/** The deepest nesting of lists and mappings a scenario may have: the schema needs six levels. */
export const SCENARIO_MAX_NESTING = 64;

/**
 * Where the brackets of `text` (`[` and `{` outside strings, and for YAML outside comments) first nest deeper
 * than `limit`: the offset of the bracket, or -1. Linear, no recursion: it runs before a parser that recurses.
 */
export function nestedTooDeep(text: string, limit: number, yaml: boolean): number {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
    } else if (yaml && c === "'") {
      // a single-quoted YAML scalar; '' is a quote inside it
      for (i++; i < text.length; i++) if (text[i] === "'" && text[++i] !== "'") break;
      i--;
    } else if (yaml && c === '#' && (i === 0 || /\s/.test(text[i - 1]))) {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (c === '[' || c === '{') {
      if (++depth > limit) return i;
    } else if (c === ']' || c === '}') {
      depth = Math.max(0, depth - 1);
    }
  }
  return -1;
}

/**
 * Parses and validates scenario text. Throws EINVAL naming the file and the path of the first bad fields and
 * what was expected; a file that does not parse is named with the line and column of the error, one nested
 * deeper than {@link SCENARIO_MAX_NESTING} levels with where it does.
 */
export function parseScenario(text: string, source: string): Scenario {
  let raw: unknown;
  const yaml = /\.ya?ml$/i.test(source) || !/^\s*[{[]/.test(text);
  if (text.trim() === '' || (yaml && /^\s*(#[^\n]*\s*)*$/.test(text))) {
    throw new KernelError(Errno.EINVAL, `scenario ${source}: the file is empty (wanted a ${yaml ? 'YAML' : 'JSON'} object with at least 'generations')`);
  }
  const tooDeep = nestedTooDeep(text, SCENARIO_MAX_NESTING, yaml);
  if (tooDeep >= 0) {
    const { line, column } = lineColumn(text, tooDeep);
    throw new KernelError(Errno.EINVAL, `scenario ${source}: line ${line}, column ${column}: lists and mappings nest more than ${SCENARIO_MAX_NESTING} levels deep (wanted at most ${SCENARIO_MAX_NESTING})`);
  }
  try {
    raw = yaml ? parseYaml(text, { maxAliasCount: 100 }) : JSON.parse(text);
  } catch (e) {
    // deep block indentation has no brackets to count: a parser that runs out of stack says the same, in a line
    if (/Maximum call stack size exceeded/.test(String((e as Error | undefined)?.message))) {
      throw new KernelError(Errno.EINVAL, `scenario ${source}: nested too deeply for the ${yaml ? 'YAML' : 'JSON'} parser (wanted at most ${SCENARIO_MAX_NESTING} levels)`);
    }
    throw new KernelError(Errno.EINVAL, `scenario ${source}: not valid ${yaml ? 'YAML' : 'JSON'}: ${yaml ? yamlError(e) : jsonError(e, text)}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    const found = raw === null || raw === undefined ? 'nothing' : Array.isArray(raw) ? 'a list' : `the ${typeof raw} ${JSON.stringify(raw).slice(0, 40)}`;
    throw new KernelError(Errno.EINVAL, `scenario ${source}: the file holds ${found} (wanted an object with at least 'generations')`);
  }
  const r = ScenarioSchema.safeParse(raw);
  if (!r.success) {
    const issues = r.error.issues.slice(0, 5).map((i) => {
      const path = i.path.length ? i.path.map((p) => (typeof p === 'number' ? `[${p}]` : `.${String(p)}`)).join('').replace(/^\./, '') : '(top level)';
      return `${path}: ${i.message}`;
    });
    const more = r.error.issues.length > 5 ? ` (and ${r.error.issues.length - 5} more)` : '';
    throw new KernelError(Errno.EINVAL, `scenario ${source}: ${issues.join('; ')}${more}`);
  }
  return r.data;
}

/**
 * The generation that preserves the most, and how many bytes it asks for (folios, vmalloc areas, reserve_mem
 * regions, kstate payloads, memfd files): a scenario asking for more than the machine's RAM is refused before it
 * runs.
 */
export function scenarioDemand(s: Scenario): { generation: number; bytes: number } {
  let best = { generation: 1, bytes: 0 };
  s.generations.forEach((g, i) => {
    const p = g.preserve;
    const pages = (n: number): number => Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
    let bytes = p.folios?.total ?? 0;
    for (const v of p.vmalloc ?? []) bytes += pages(v.size);
    for (const r of p.reserveMem ?? []) bytes += r.size;
    if (p.kstate) bytes += p.kstate.objects * pages(p.kstate.size);
    for (const f of p.memfd ?? []) bytes += f.sparse ? pages(f.size) / 2 : pages(f.size);
    if (bytes > best.bytes) best = { generation: i + 1, bytes };
  });
  return best;
}

/** Reads and validates a scenario file. */
export function readScenario(file: string): Scenario {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new KernelError(Errno.ENOENT, `scenario ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  return parseScenario(text, file);
}
