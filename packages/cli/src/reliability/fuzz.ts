import { KernelError, hex, seededRandom, type BootParams, type Kernel, KernelBug } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory, type RamRange } from '@kho/physmem';
import { KHO_KEXEC_METADATA_SUBTREE, Kho, KhoKexecMetadataStruct, SETUP_KHO, decodeKhoData, PROP_SUB_FDT } from '@kho/kho-core';
import { decodeFdt } from '@kho/fdt';
import { treeNodePfns } from '@kho/radix-tracker';
import { KSTATE_SEGMENT_HEADER_SIZE, KSTATE_SUBTREE, openStream } from '@kho/kstate';
import { MEMFD_SUBTREE } from '@kho/memfd';
import { MEMBLOCK_SUBTREE } from '@kho/memblock';
import { decodeKhoVmallocChunk } from '@kho/vmalloc';
import { DEFAULT_DEMO, runFirstHalf, type DemoOptions } from '../demo/run';
import { kernelImage, machineFor } from '../system';

/** A structure of the handover that mutations aim at: its name and the pages it occupies. */
export interface FuzzTarget {
  readonly name: string;
  readonly pages: readonly number[];
  /** Bytes of each page that hold the structure (default: the whole page). */
  readonly used?: ReadonlyMap<number, number>;
}

export type MutationKind = 'bit-flip' | 'random-word' | 'pointer-outside-ram' | 'pointer-into-scratch' | 'pointer-to-itself' | 'pointer-to-other';

/** One case's outcome. */
export interface FuzzCase {
  readonly index: number;
  readonly target: string;
  readonly mutation: MutationKind;
  readonly at: string;
  /** refused: the next kernel (or a subsystem) said what it refused; accepted: every check passed. */
  readonly outcome: 'refused' | 'accepted' | 'crash' | 'hang' | 'false-restore';
  readonly detail?: string;
  readonly ms: number;
}

export interface FuzzResult {
  readonly cases: number;
  readonly refused: number;
  readonly accepted: number;
  readonly crashes: FuzzCase[];
  readonly hangs: FuzzCase[];
  readonly falseRestores: FuzzCase[];
  readonly byTarget: Record<string, { tried: number; refused: number; accepted: number }>;
  readonly byMutation: Record<string, number>;
  /** Reasons given for refusals, with how often each (the first 40 distinct). */
  readonly reasons: Record<string, number>;
}

export interface FuzzOptions {
  readonly cases: number;
  readonly seed: number;
  /** A case taking longer than this counts as a hang (every walk is bounded, so none should). */
  readonly hangMs?: number;
  readonly demo?: Partial<DemoOptions>;
  onCase?(c: FuzzCase): void;
}

/** A valid handover to mutate: its RAM pages, boot parameters, machine and the blocks it preserved. */
interface Base {
  readonly ranges: readonly RamRange[];
  readonly pages: Map<number, Uint8Array>;
  readonly params: BootParams;
  readonly preserved: ReadonlySet<string>;
  readonly targets: FuzzTarget[];
  readonly scratch: Array<{ addr: number; size: number }>;
  readonly opts: DemoOptions;
}

/** Builds the base handover: the demo's first kernel on a small machine, stopped at the jump. */
function buildBase(demo: Partial<DemoOptions>): Base {
  const opts: DemoOptions = { ...DEFAULT_DEMO, ram: 256 * 2 ** 20, mem: 2 * 2 ** 20, seed: 9, cmdline: 'kho_scratch=24M,24M,24M', ...demo };
  const first = runFirstHalf(opts);
  const ram = first.machine.device(PhysicalMemory);
  const pages = new Map<number, Uint8Array>();
  for (const pfn of ram.populatedPfns()) pages.set(pfn, Uint8Array.from(ram.pageIfPresent(pfn)!));
  // What a clean boot finds: the preserved set the mutations must never add to.
  const clean = boot({ ranges: ram.ranges, pages, params: first.params, opts } as Base);
  const inc = clean.get(Kho).incomingHandover;
  if (!inc) throw new KernelBug('the unmutated handover was not revived');
  const preserved = new Set(inc.pfns.map((p, i) => `${p}:${inc.orders[i]}`));
  // The structures are read from the RAM as the old kernel left it: the next kernel reuses the tracker's pages.
  const ram0 = new PhysicalMemory({ ranges: ram.ranges });
  for (const [pfn, bytes] of pages) ram0.write(pfn * PAGE_SIZE, bytes);
  return { ranges: ram.ranges, pages, params: first.params, preserved, targets: findTargets(ram0, inc.mapPhys, inc.fdtPhys, first.params), scratch: [...first.scratch], opts };
}

/** Finds the handover's structures in the old kernel's RAM: root FDT, tracker, scratch array, subtree blobs. */
function findTargets(ram: PhysicalMemory, mapPhys: number, fdtPhys: number, params: BootParams): FuzzTarget[] {
  const pfn = (phys: number): number => Math.floor(phys / PAGE_SIZE);
  const targets: FuzzTarget[] = [{ name: 'root FDT', pages: [pfn(fdtPhys)] }];
  targets.push({ name: 'tracker', pages: treeNodePfns(ram, mapPhys) });
  const kd = decodeKhoData(params.setupData(SETUP_KHO)!);
  if (typeof kd !== 'string') targets.push({ name: 'scratch array', pages: [pfn(kd.scratchAddr)] });
  const fdt = decodeFdt(ram.read(fdtPhys, PAGE_SIZE));
  for (const child of fdt.children) {
    const blob = Number(child.getU64LE(PROP_SUB_FDT) ?? 0n);
    if (child.name === KSTATE_SUBTREE) {
      const stream = openStream(ram, blob);
      // only the bytes that hold a segment's header and payload (the rest of its block is unused)
      const used = new Map<number, number>();
      for (const sg of stream.segments) {
        const bytes = KSTATE_SEGMENT_HEADER_SIZE + sg.payload;
        for (let i = 0; i * PAGE_SIZE < bytes && i < 2 ** sg.order; i++) used.set(pfn(sg.phys) + i, Math.min(PAGE_SIZE, bytes - i * PAGE_SIZE));
      }
      targets.push({ name: 'kstate stream', pages: [...used.keys()], used });
      // the self-test's vmalloc list: its kho_vmalloc chunk pages
      const chunks: number[] = [];
      for (const s of stream.sections) {
        const rec = stream.decode(s);
        const vm = (rec.values as Record<string, unknown>).folios as { first?: number } | undefined;
        for (let c = vm?.first ?? 0, n = 0; c !== 0 && n < 64; n++) {
          chunks.push(pfn(c));
          c = decodeKhoVmallocChunk(ram.read(c, PAGE_SIZE)).next;
        }
      }
      if (chunks.length) targets.push({ name: 'vmalloc chunks', pages: chunks });
    } else if (child.name === MEMFD_SUBTREE) {
      targets.push({ name: 'memfd table', pages: [pfn(blob)] });
    } else if (child.name === MEMBLOCK_SUBTREE) {
      targets.push({ name: 'memblock FDT', pages: [pfn(blob)] });
    } else if (child.name === KHO_KEXEC_METADATA_SUBTREE) {
      targets.push({ name: 'kexec-metadata', pages: [pfn(blob)], used: new Map([[pfn(blob), KhoKexecMetadataStruct.size]]) });
    } else {
      targets.push({ name: `subtree ${child.name}`, pages: [pfn(blob)] });
    }
  }
  return targets.filter((t) => t.pages.length > 0);
}

function boot(base: Pick<Base, 'ranges' | 'pages' | 'params' | 'opts'>, mutate?: (ram: PhysicalMemory) => void): Kernel {
  const machine = machineFor({ ranges: base.ranges });
  const ram = machine.device(PhysicalMemory);
  for (const [pfn, bytes] of base.pages) ram.write(pfn * PAGE_SIZE, bytes);
  mutate?.(ram);
  return machine.bootFrom(base.params, { image: kernelImage({ mem: base.opts.mem, seed: base.opts.seed }) });
}

const MUTATIONS: MutationKind[] = ['bit-flip', 'random-word', 'pointer-outside-ram', 'pointer-into-scratch', 'pointer-to-itself', 'pointer-to-other'];

/**
 * Mutates a valid handover `cases` times (bit flips and random words in the root FDT, the tracker, the scratch
 * array, the kstate stream, vmalloc chunks, the memfd table; pointers redirected outside RAM, into scratch,
 * into their own page, into another structure) and boots each. A case must end refused (the kernel or a
 * subsystem says what it refused) or accepted (everything verified); it must never crash (anything but a
 * KernelError escaping), hang, or stamp or restore a block the old kernel did not preserve.
 */
export function fuzzHandovers(opts: FuzzOptions): FuzzResult {
  const base = buildBase(opts.demo ?? {});
  const rnd = seededRandom(opts.seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const result: FuzzResult = { cases: 0, refused: 0, accepted: 0, crashes: [], hangs: [], falseRestores: [], byTarget: {}, byMutation: {}, reasons: {} };
  const hangMs = opts.hangMs ?? 5000;
  for (let i = 0; i < opts.cases; i++) {
    const target = base.targets[int(base.targets.length)];
    const mutation = MUTATIONS[int(MUTATIONS.length)];
    const page = target.pages[int(target.pages.length)];
    let at = '';
    const mutate = (ram: PhysicalMemory): void => {
      const pagePhys = page * PAGE_SIZE;
      const span = target.used?.get(page) ?? PAGE_SIZE;
      if (mutation === 'bit-flip') {
        const off = int(span);
        const bit = int(8);
        ram.writeU8(pagePhys + off, ram.readU8(pagePhys + off) ^ (1 << bit));
        at = `${hex(pagePhys + off)} bit ${bit}`;
        return;
      }
      // word mutations: prefer a word that holds a pointer (a page-aligned RAM address) when redirecting
      let off = Math.min(int(Math.ceil(span / 8)) * 8, PAGE_SIZE - 8);
      if (mutation !== 'random-word') {
        const pointers: number[] = [];
        for (let o = 0; o < PAGE_SIZE; o += 8) {
          const v = ram.readU64(pagePhys + o);
          if (v !== 0 && v % PAGE_SIZE === 0 && ram.isRam(v, PAGE_SIZE)) pointers.push(o);
        }
        if (pointers.length) off = pointers[int(pointers.length)];
      }
      const value =
        mutation === 'random-word'
          ? BigInt(int(2 ** 32)) * 2n ** 32n + BigInt(int(2 ** 32))
          : mutation === 'pointer-outside-ram'
            ? BigInt(2 ** 45 + int(1024) * PAGE_SIZE)
            : mutation === 'pointer-into-scratch'
              ? BigInt(base.scratch[int(base.scratch.length)].addr + int(64) * PAGE_SIZE)
              : mutation === 'pointer-to-itself'
                ? BigInt(pagePhys)
                : BigInt(otherPage(base.targets, target, int) * PAGE_SIZE);
      ram.writeU64(pagePhys + off, value);
      at = `${hex(pagePhys + off)} := ${hex(value)}`;
    };
    const t0 = performance.now();
    let outcome: FuzzCase['outcome'] = 'accepted';
    let detail: string | undefined;
    try {
      const k = boot(base, mutate);
      const kho = k.get(Kho);
      const inc = kho.incomingHandover;
      const extra = inc ? inc.pfns.findIndex((p, j) => !base.preserved.has(`${p}:${inc.orders[j]}`)) : -1;
      if (inc && extra >= 0) {
        outcome = 'false-restore';
        detail = `stamped block ${hex(inc.pfns[extra] * PAGE_SIZE)} order ${inc.orders[extra]}, which the old kernel did not preserve`;
      } else {
        const problems: string[] = [];
        if (!inc) problems.push(`revival refused: ${kho.stats().revivalError ?? 'no handover'}`);
        const r = k.restore();
        for (const [name, o] of Object.entries(r.plugins)) if (!o.ok) problems.push(`${name}: ${o.error}`);
        const f = k.finish();
        for (const [name, o] of Object.entries(f.plugins)) if (!o.ok) problems.push(`${name}: ${o.error}`);
        const unrestored = Number(f.plugins.kho?.report?.unrestoredBlocks ?? 0);
        if (unrestored > 0) problems.push(`${unrestored} preserved blocks left unrestored`);
        if (problems.length) {
          outcome = 'refused';
          detail = problems.join('; ');
        }
      }
    } catch (e) {
      if (e instanceof KernelError) {
        outcome = 'refused';
        detail = e.message;
      } else {
        outcome = 'crash';
        detail = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      }
    }
    const ms = performance.now() - t0;
    if (ms > hangMs && outcome !== 'crash') {
      outcome = 'hang';
      detail = `took ${Math.round(ms)} ms`;
    }
    const c: FuzzCase = { index: i, target: target.name, mutation, at, outcome, ...(detail ? { detail } : {}), ms: Math.round(ms * 10) / 10 };
    record(result, c);
    opts.onCase?.(c);
  }
  return result;
}

function otherPage(targets: readonly FuzzTarget[], not: FuzzTarget, int: (n: number) => number): number {
  const others = targets.filter((t) => t !== not);
  const t = others.length ? others[int(others.length)] : not;
  return t.pages[int(t.pages.length)];
}

function record(r: FuzzResult, c: FuzzCase): void {
  const mutable = r as { cases: number; refused: number; accepted: number };
  mutable.cases++;
  const t = (r.byTarget[c.target] ??= { tried: 0, refused: 0, accepted: 0 });
  t.tried++;
  r.byMutation[c.mutation] = (r.byMutation[c.mutation] ?? 0) + 1;
  if (c.outcome === 'refused') {
    mutable.refused++;
    t.refused++;
    const reason = (c.detail ?? '').replace(/0x[0-9a-f]+/g, '0x…').replace(/\b\d+\b/g, 'N').slice(0, 160);
    if (r.reasons[reason] !== undefined || Object.keys(r.reasons).length < 40) r.reasons[reason] = (r.reasons[reason] ?? 0) + 1;
  } else if (c.outcome === 'accepted') {
    mutable.accepted++;
    t.accepted++;
  } else if (c.outcome === 'crash') r.crashes.push(c);
  else if (c.outcome === 'hang') r.hangs.push(c);
  else r.falseRestores.push(c);
}
