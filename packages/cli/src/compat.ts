import { existsSync } from 'node:fs';
import { Errno, KernelError, describeError } from '@kho/kernel';
import { KHO_GENERATIONS, generationById, selectGeneration, type KhoGeneration } from '@kho/kho-core';
import { KSTATE_SCHEMA_FORMAT, ReserveMemRegionState, compat as kstateCompat, type DescSchema, type Description } from '@kho/kstate';
import { KhoTestStateDesc } from './demo/kho-test';
import { inspectImage } from './inspect';
import { TRACKERS, isTrackerKind } from './registry';

/**
 * `kho compat`: can kernel B take the handover kernel A writes? A kernel is a configuration (its tracker, its
 * `kho_abi=`, its reserve_mem handover format) or an image (what a kernel wrote). Each aspect of the handover gets
 * two verdicts: the lab's kernel (which reads every generation of its tracker's map) and Linux's (whose kernels
 * accept exactly their own root compatible, need blob-size from kho-v3 on, and revive reserve_mem only from
 * memblock-v1).
 */

/** What compat knows about one side. */
export interface KernelSide {
  readonly label: string;
  readonly generation: KhoGeneration;
  readonly tracker: string;
  /** How reserve_mem regions are (or would be) handed over; undefined when an image holds none. */
  readonly reserveMem?: 'fdt' | 'kstate';
  /** An image's kstate sections: each writer schema, by section. */
  readonly kstate?: ReadonlyArray<{ id: string; name: string; version: number; schemas: readonly DescSchema[] }>;
  /** An image's block orders (to check restore limits). */
  readonly maxBlockOrder?: number;
}

/** One aspect's verdicts. */
export interface CompatLine {
  readonly aspect: string;
  readonly lab: { ok: boolean; why: string };
  /** Linux's verdict; undefined where no Linux release writes the generations involved. */
  readonly linux?: { ok: boolean; why: string };
}

export interface CompatResult {
  readonly from: string;
  readonly to: string;
  /** The lab's kernel B takes A's handover (every aspect ok for the lab). */
  readonly lab: boolean;
  /** A Linux kernel of B's generation would take it (undefined when either generation is not Linux's). */
  readonly linux?: boolean;
  readonly lines: readonly CompatLine[];
}

/** The kstate descriptions the lab's kernel image registers (what a lab kernel B can read). */
const LAB_DESCRIPTIONS: readonly Description<never>[] = [KhoTestStateDesc as Description<never>, ReserveMemRegionState as unknown as Description<never>];

/**
 * A kernel configuration from text: command-line words `kho_abi=<gen>`, `tracker=<kind>` and
 * `reserve_mem_handover=<fdt|memblock-v1|kstate>` (others are ignored). Throws EINVAL naming a bad value.
 */
export function kernelFromConfig(text: string): KernelSide {
  const words = new Map(
    text
      .split(/\s+/)
      .filter(Boolean)
      .map((w) => {
        const i = w.indexOf('=');
        return (i < 0 ? [w, ''] : [w.slice(0, i), w.slice(i + 1)]) as [string, string];
      }),
  );
  const abi = words.get('kho_abi');
  let tracker = words.get('tracker');
  if (tracker !== undefined && !isTrackerKind(tracker)) {
    throw new KernelError(Errno.EINVAL, `tracker=${tracker} (wanted one of ${TRACKERS.map((t) => t.kind).join(', ')})`);
  }
  if (tracker === undefined) tracker = abi !== undefined ? (generationById(abi)?.tracker ?? 'radix') : 'radix';
  const t = TRACKERS.find((x) => x.kind === tracker)!;
  const generation = selectGeneration(abi, t.kind, t.defaultGeneration);
  const rm = words.get('reserve_mem_handover') ?? 'fdt';
  if (!['fdt', 'memblock-v1', 'kstate'].includes(rm)) throw new KernelError(Errno.EINVAL, `reserve_mem_handover=${rm} (wanted fdt, memblock-v1 or kstate)`);
  return { label: text.trim() || '(defaults)', generation, tracker: t.kind, reserveMem: rm === 'kstate' ? 'kstate' : 'fdt' };
}

/** The kernel that wrote a handover image, as far as the image tells. Throws what `kho inspect` throws. */
export function kernelFromImage(file: string): KernelSide {
  const r = inspectImage(file);
  const generation = KHO_GENERATIONS.find((g) => g.id === r.fdt?.generation);
  if (!generation) throw new KernelError(Errno.EINVAL, `${file}: the image's root FDT names no generation this tool knows (${r.problems.map((p) => p.what).join('; ') || 'no root FDT'})`);
  const kstate: Array<{ id: string; name: string; version: number; schemas: DescSchema[] }> = [];
  let reserveMem: 'fdt' | 'kstate' | undefined = r.subtrees.some((s) => s.name === 'memblock') ? 'fdt' : undefined;
  for (const s of r.subtrees) {
    const stream = s.kstate as { sections?: Array<{ id: string; name: string; version: number }>; schemas?: DescSchema[] } | undefined;
    for (const sec of stream?.sections ?? []) {
      kstate.push({ id: String(sec.id), name: sec.name, version: sec.version, schemas: stream?.schemas ?? [] });
      if (sec.id === 'reserve_mem') reserveMem ??= 'kstate';
    }
  }
  const maxBlockOrder = r.blocks.orders.reduce((m, o) => Math.max(m, o), 0);
  return { label: file, generation, tracker: generation.tracker, reserveMem, kstate, maxBlockOrder };
}

/** A side from an argument: an existing file is an image, anything else a configuration. */
export function kernelFromArg(arg: string): KernelSide {
  return existsSync(arg) ? kernelFromImage(arg) : kernelFromConfig(arg);
}

/** Whether kernel `b` takes the handover kernel `a` writes, aspect by aspect. */
export function compareKernels(a: KernelSide, b: KernelSide): CompatResult {
  const ga = a.generation;
  const gb = b.generation;
  const linuxPair = ga.mainline && gb.mainline;
  const lines: CompatLine[] = [];
  const line = (aspect: string, lab: [boolean, string], linux?: [boolean, string]): void =>
    void lines.push({ aspect, lab: { ok: lab[0], why: lab[1] }, ...(linux && linuxPair ? { linux: { ok: linux[0], why: linux[1] } } : {}) });

  const sameMap = ga.tracker === b.tracker;
  line(
    'root FDT',
    sameMap ? [true, `reads '${ga.compatible}' (a ${ga.tracker} map) with its ${b.tracker} tracker`] : [false, `'${ga.compatible}' carries the ${ga.tracker} map; its tracker is ${b.tracker}`],
    ga.compatible === gb.compatible ? [true, `'${ga.compatible}' is its own compatible`] : [false, `a '${gb.compatible}' kernel accepts only '${gb.compatible}' (found '${ga.compatible}'): revival disabled, cold boot`],
  );
  if (!sameMap) return finish(a, b, lines, linuxPair);

  if (gb.blobSize && !ga.blobSize) {
    line('subtrees', [true, `no blob-size in '${ga.compatible}': sizes are unknown, owners read without them`], [false, `every subtree is EINVAL (blob-size missing)`]);
  } else if (ga.subtreeAddress !== gb.subtreeAddress) {
    line('subtrees', [true, `'${ga.subtreeAddress}' read as ${ga.compatible} writes it`], [false, `it looks for '${gb.subtreeAddress}', the subtrees have '${ga.subtreeAddress}'`]);
  } else {
    line('subtrees', [true, ga.blobSize ? 'preserved-data and blob-size' : `${ga.subtreeAddress}, no sizes`], [true, 'same properties']);
  }

  if (ga.kexecMetadata && gb.kexecMetadata) line('kexec-metadata', [true, 'the kexec count carries on'], [true, 'the kexec count carries on']);
  else if (gb.kexecMetadata) line('kexec-metadata', [true, `none written by '${ga.compatible}': the count restarts at 1`], [true, 'the count restarts at 1']);
  else if (ga.kexecMetadata) line('kexec-metadata', [true, `'${gb.compatible}' does not read it (ignored)`], [true, 'ignored']);

  if (gb.restoreMaxOrder < Infinity && a.maxBlockOrder !== undefined && a.maxBlockOrder > gb.restoreMaxOrder) {
    // an image shows its blocks: those above the limit cannot come back
    const why = `blocks up to order ${a.maxBlockOrder}: '${gb.compatible}' restores nothing above order ${gb.restoreMaxOrder}`;
    line('large blocks', [false, why], [false, why]);
  } else if (gb.restoreMaxOrder < Infinity && a.maxBlockOrder === undefined && ga.tracker === 'radix') {
    // a configuration: only a warning, most handovers hold no such block
    const why = `a preserve_pages range 8 MiB-aligned and at least 8 MiB long becomes a block above order ${gb.restoreMaxOrder}, which '${gb.compatible}' cannot restore`;
    line('large blocks', [true, why], [true, why]);
  }

  if (a.reserveMem === 'kstate') {
    line('reserve_mem', [true, 'kstate form: read by the kstate handover of the lab\'s image'], [false, 'Linux revives reserve_mem only from memblock-v1: the regions are allocated fresh']);
  } else if (a.reserveMem === 'fdt') {
    line('reserve_mem', [true, 'memblock-v1'], [true, 'memblock-v1']);
  }

  for (const sec of a.kstate ?? []) {
    const desc = LAB_DESCRIPTIONS.find((d) => String(d.id) === sec.id);
    if (!desc) {
      line(`kstate ${sec.name}`, [true, `no description with id '${sec.id}': the section is skipped and reported at finish`]);
      continue;
    }
    let r: { newReadsOld: boolean; reasons: readonly string[] };
    try {
      r = kstateCompat({ format: KSTATE_SCHEMA_FORMAT, root: sec.id, descriptions: sec.schemas } as never, desc);
    } catch (e) {
      line(`kstate ${sec.name}`, [false, describeError(e)]);
      continue;
    }
    line(`kstate ${sec.name} v${sec.version}`, r.newReadsOld ? [true, `read by ${desc.name} v${desc.version}`] : [false, r.reasons.filter((x) => x.startsWith('new reads old')).join('; ')]);
  }
  return finish(a, b, lines, linuxPair);
}

function finish(a: KernelSide, b: KernelSide, lines: CompatLine[], linuxPair: boolean): CompatResult {
  return {
    from: a.label,
    to: b.label,
    lab: lines.every((l) => l.lab.ok),
    ...(linuxPair ? { linux: lines.every((l) => l.linux === undefined || l.linux.ok) } : {}),
    lines,
  };
}

/** Every writer generation against every reader generation (each with its generation's tracker). */
export function compatMatrix(): CompatResult[] {
  const side = (g: KhoGeneration): KernelSide => ({ label: g.id, generation: g, tracker: g.tracker, reserveMem: 'fdt' });
  return KHO_GENERATIONS.flatMap((a) => KHO_GENERATIONS.map((b) => compareKernels(side(a), side(b))));
}

/** The result as text: one line per aspect with both verdicts, then the verdict. */
export function formatCompat(r: CompatResult): string {
  const out = [`kho compat: ${r.from} -> ${r.to}`];
  const w = Math.max(...r.lines.map((l) => l.aspect.length));
  for (const l of r.lines) {
    out.push(`  ${l.aspect.padEnd(w)}  lab: ${l.lab.ok ? 'ok' : 'NO'} (${l.lab.why})${l.linux ? `; Linux: ${l.linux.ok ? 'ok' : 'NO'} (${l.linux.why})` : ''}`);
  }
  out.push(`RESULT: the lab's kernel ${r.lab ? 'takes' : 'refuses'} this handover${r.linux === undefined ? '' : `; Linux ${r.linux ? 'takes it' : 'would refuse it'}`}`);
  return out.join('\n');
}

/**
 * The matrix as a table: rows are the writing generation, columns the reading one; `ok` both take it, `lab` only
 * the lab's kernel does, `--` neither, `(ok)` / `(--)` where Linux has no such pair.
 */
export function formatMatrix(results: readonly CompatResult[]): string {
  const ids = KHO_GENERATIONS.map((g) => g.id);
  const w = Math.max(...ids.map((i) => i.length), 5);
  const cell = (r: CompatResult): string => (r.linux === undefined ? (r.lab ? '(ok)' : '(--)') : r.lab && r.linux ? 'ok' : r.lab ? 'lab' : '--');
  const out = [`${'from \\ to'.padEnd(w + 2)}${ids.map((i) => i.padEnd(w + 2)).join('')}`];
  for (const from of ids) {
    out.push(`${from.padEnd(w + 2)}${ids.map((to) => cell(results.find((r) => r.from === from && r.to === to)!).padEnd(w + 2)).join('')}`);
  }
  out.push('');
  out.push("ok: the lab's kernel and Linux both take it; lab: only the lab's kernel (it reads every generation of its map);");
  out.push('--: refused (another kind of map); (ok)/(--): a pair Linux has no release for (the project\'s or an RFC\'s form).');
  return out.join('\n');
}
