import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { Errno, KernelError, parseSize } from '@kho/kernel';
import { MAX_PAGE_ORDER, PAGE_SIZE } from '@kho/physmem';
import { TRACKER_KINDS } from '../system';

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

const generation = z
  .object({
    /** What this generation's kernel preserves before its kexec. */
    preserve: z.object({ folios: folios.optional() }).strict(),
    /** Command line of the kernel booted by this generation's kexec (default: the scenario's). */
    cmdline: z.string().optional(),
    /** This many generations alike, one after the other (each with its own seed). */
    repeat: z.number().int().min(1).max(1000).optional(),
  })
  .strict();

const range = z.object({ start: size, size: pageMultiple, node: z.number().int().min(0).max(63) }).strict();

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
      .transform((gens) => gens.flatMap(({ repeat, ...g }) => Array.from({ length: repeat ?? 1 }, () => g)))
      .refine((gens) => gens.length <= 1000, { message: 'at most 1000 generations, repeats included' }),
  })
  .strict();

export type Scenario = z.output<typeof ScenarioSchema>;

/** Parses and validates scenario text. Throws EINVAL naming the path of the first bad fields and what was expected. */
export function parseScenario(text: string, source: string): Scenario {
  let raw: unknown;
  const yaml = /\.ya?ml$/i.test(source) || !/^\s*[{[]/.test(text);
  try {
    raw = yaml ? parseYaml(text) : JSON.parse(text);
  } catch (e) {
    const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
    throw new KernelError(Errno.EINVAL, `scenario ${source}: not valid ${yaml ? 'YAML' : 'JSON'}: ${msg}`);
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
