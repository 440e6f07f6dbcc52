import { KernelError, describeError, hex, seededRandom, type BootParams, type Kernel, KernelBug } from '@kho/kernel';
import { PAGE_SIZE, PhysicalMemory, Slab, type RamRange } from '@kho/physmem';
import {
  KHO_KEXEC_METADATA_SUBTREE,
  Kho,
  KhoKexecMetadataStruct,
  PROP_PRESERVED_MEMORY_MAP,
  PROP_PRESERVED_MEMORY_MAP_CRC,
  SETUP_KHO,
  decodeKhoData,
  pagesCrc,
  PROP_SUB_FDT,
} from '@kho/kho-core';
import { decodeFdt, encodeFdt } from '@kho/fdt';
import { decodeImage, encodeImage, pagesToSegments, ELF64_EHDR_SIZE, ELF64_PHDR_SIZE } from '@kho/image';
import { KhoSlab } from '@kho/kho-slab';
import { Vfs, luoCreateSession, luoOpenDevice, luoPreserveFd, luoRetrieveFd, luoRetrieveSession, luoSessionFinish } from '@kho/liveupdate';
import { MemfdFs } from '@kho/memfd';
import { incomingTreeNodePfns, treeNodePfns } from '@kho/radix-tracker';
import { KSTATE_SEGMENT_HEADER_SIZE, KSTATE_SUBTREE, crc32c, openStream } from '@kho/kstate';
import { KSTATE_RECORD_HEADER_SIZE, KSTATE_SEGMENT_CRC_SPAN, KStateRecordStruct } from '@kho/kstate/abi';
import { MEMFD_SUBTREE } from '@kho/memfd';
import { MEMBLOCK_SUBTREE } from '@kho/memblock';
import { decodeKhoVmallocChunk } from '@kho/vmalloc';
import { DEFAULT_DEMO, type DemoOptions } from '../demo/run';
import { verifyDemoFiles, writeDemoFiles } from '../demo/files';
import { KHO_TEST_LOG_CMDLINE, KhoTest } from '../demo/kho-test';
import { SeededBytes } from '../scenario/workload';
import { kernelImage, machineFor } from '../system';
import { SweepPool } from './pool';

/** A structure of the handover that mutations aim at: its name and the pages it occupies. */
export interface FuzzTarget {
  readonly name: string;
  readonly pages: readonly number[];
  /** Bytes of each page that hold the structure (default: the whole page). */
  readonly used?: ReadonlyMap<number, number>;
  /** The kstate stream's segments (phys and payload bytes), whose record and header checksums a case may recompute. */
  readonly kstateSegments?: ReadonlyArray<{ readonly phys: number; readonly payload: number }>;
}

export type MutationKind =
  | 'bit-flip'
  | 'random-word'
  | 'pointer-outside-ram'
  | 'pointer-into-scratch'
  | 'pointer-to-itself'
  | 'pointer-to-other'
  | 'count-past-end'
  | 'huge-size'
  | 'cycle'
  | 'shared-node'
  | 'duplicate-record'
  | 'overlap-record';

/** One case's outcome. */
export interface FuzzCase {
  readonly index: number;
  readonly target: string;
  readonly mutation: MutationKind;
  readonly at: string;
  /** refused: the next kernel (or a subsystem) said what it refused; accepted: every check passed. */
  /** Whether the structure's checksum was recomputed after the mutation (so the content checks are what is tested). */
  readonly crc?: 'recomputed';
  readonly outcome: 'refused' | 'accepted' | 'crash' | 'hang' | 'false-restore' | 'lost';
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
  /** Accepted cases in which a preserved byte came back different with no error said (a lost preserved byte). */
  readonly lost: FuzzCase[];
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

/** Only the RAM structures (`ram`), only the image file's ELF headers and notes (`image`), or both (default). */
export type FuzzScope = 'ram' | 'image' | 'all';

/** A valid handover to mutate: its RAM pages, boot parameters, machine and the blocks it preserved. */
interface Base {
  readonly ranges: readonly RamRange[];
  readonly pages: Map<number, Uint8Array>;
  readonly params: BootParams;
  readonly preserved: ReadonlySet<string>;
  readonly targets: FuzzTarget[];
  readonly scratch: Array<{ addr: number; size: number }>;
  readonly opts: DemoOptions;
  readonly fdtPhys: number;
  readonly mapPhys: number;
  /** The kmalloc objects preserved through kho-slab: where, and their bytes. */
  readonly slab: Array<{ ptr: number; bytes: Uint8Array }>;
  /** The memfds of LUO session `s1`: token and bytes. */
  readonly luo: Array<{ token: number; bytes: Uint8Array }>;
  /** The base as an image file's bytes and where its data starts (the headers and notes are before). */
  readonly image: Uint8Array;
  readonly imageHead: number;
}

const LUO_SESSION = 's1';

/**
 * Builds the base handover: the demo's first kernel (self-test folios, kstate, memfd files, reserve_mem log) on a
 * small machine with LUO on, plus kmalloc objects preserved through kho-slab and a LUO session of two memfds
 * (memfd-v2, one with holes), stopped at the jump: every table the project reads is in it.
 */
function buildBase(demo: Partial<DemoOptions>): Base {
  const opts: DemoOptions = { ...DEFAULT_DEMO, ram: 256 * 2 ** 20, mem: 2 * 2 ** 20, seed: 9, cmdline: 'kho_scratch=24M,24M,24M liveupdate=on', ...demo };
  const machine = machineFor({ ram: opts.ram, nodes: opts.nodes });
  const k1 = machine.boot({ image: kernelImage({ mem: opts.mem, seed: opts.seed }), cmdline: `${KHO_TEST_LOG_CMDLINE} ${opts.cmdline}`.trim() });
  k1.get(KhoTest).generate();
  writeDemoFiles(k1, opts.seed);
  const ram = machine.device(PhysicalMemory);
  const slab = [24, 200, 3000, 20_000].map((size, i) => {
    const ptr = k1.get(Slab).kmalloc(size);
    const bytes = new SeededBytes(100 + i).next(size);
    ram.write(ptr, bytes);
    k1.get(KhoSlab).preserveSlab(ptr);
    return { ptr, bytes };
  });
  const p = k1.get(Vfs).spawn('vmm');
  const dev = luoOpenDevice(p);
  const session = luoCreateSession(p, dev, LUO_SESSION);
  const luo = [
    { token: 7, size: 24 * 1024, from: 0 },
    { token: 8, size: 96 * 1024, from: 48 * 1024 },
  ].map((f) => {
    const fd = k1.get(MemfdFs).memfdCreate(p, `fuzz-${f.token}`);
    p.ftruncate(fd, f.size);
    const bytes = new Uint8Array(f.size);
    bytes.set(new SeededBytes(f.token).next(f.size - f.from), f.from);
    p.pwrite(fd, f.from, bytes.subarray(f.from));
    luoPreserveFd(p, session, fd, f.token);
    return { token: f.token, bytes };
  });
  k1.prepare();
  k1.serialize();
  const scratch = [...k1.get(Kho).scratchAreas()];
  const params = k1.jump();
  const pages = new Map<number, Uint8Array>();
  for (const pfn of ram.populatedPfns()) pages.set(pfn, Uint8Array.from(ram.pageIfPresent(pfn)!));
  // What a clean boot finds: the preserved set the mutations must never add to.
  const partial = { ranges: ram.ranges, pages, params, opts } as Base;
  const clean = boot(partial);
  const inc = clean.get(Kho).incomingHandover;
  if (!inc) throw new KernelBug('the unmutated handover was not revived');
  const preserved = new Set(inc.pfns.map((q, i) => `${q}:${inc.orders[i]}`));
  const cleanCheck = verify({ ...partial, slab, luo, preserved } as Base, clean);
  if (cleanCheck.problems.length || cleanCheck.lost) throw new KernelBug(`the unmutated handover does not verify: ${[...cleanCheck.problems, cleanCheck.lost ?? ''].join('; ')}`);
  // The structures are read from the RAM as the old kernel left it: the next kernel reuses the tracker's pages.
  const ram0 = new PhysicalMemory({ ranges: ram.ranges });
  for (const [pfn, bytes] of pages) ram0.write(pfn * PAGE_SIZE, bytes);
  const image = encodeImage({
    khoData: params.setupData(SETUP_KHO)!,
    machine: { pageSize: PAGE_SIZE, ram: ram.ranges.map((r) => ({ start: r.start, size: r.size, node: r.node })), cmdline: params.cmdline, tracker: 'radix', generator: 'kho-lab' },
    segments: pagesToSegments([...pages.keys()].sort((x, y) => x - y), (pfn) => pages.get(pfn)!),
  });
  const phnum = new DataView(image.buffer, image.byteOffset).getUint16(56, true);
  const imageHead = Math.min(image.length, ELF64_EHDR_SIZE + phnum * ELF64_PHDR_SIZE + 4096);
  return {
    ranges: ram.ranges,
    pages,
    params,
    preserved,
    targets: findTargets(ram0, inc.mapPhys, inc.fdtPhys, params, preserved),
    scratch: scratch.map((a) => ({ addr: a.addr, size: a.size })),
    opts,
    fdtPhys: inc.fdtPhys,
    mapPhys: inc.mapPhys,
    slab,
    luo,
    image,
    imageHead,
  };
}

/** Finds the handover's structures in the old kernel's RAM: root FDT, tracker, scratch array, subtree blobs. */
function findTargets(ram: PhysicalMemory, mapPhys: number, fdtPhys: number, params: BootParams, preserved: ReadonlySet<string>): FuzzTarget[] {
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
      targets.push({ name: 'kstate stream', pages: [...used.keys()], used, kstateSegments: stream.segments.map((sg) => ({ phys: sg.phys, payload: sg.payload })) });
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
      // LUO (sessions, file records, memfd-v2 records, kho_block chains), kho-slab and the rest: the blob and
      // every preserved page it reaches through page-aligned pointers, three levels deep (at most 48 pages)
      targets.push({ name: `subtree ${child.name}`, pages: [pfn(blob)] });
      const reached = reachable(ram, pfn(blob), preserved, new Set([pfn(fdtPhys), ...treeNodePfns(ram, mapPhys)]));
      if (reached.length) targets.push({ name: `subtree ${child.name} (linked pages)`, pages: reached });
    }
  }
  return targets.filter((t) => t.pages.length > 0);
}

/** Preserved pages (blocks of order 0 or 1) reached from `from` through page-aligned pointers, breadth first. */
function reachable(ram: PhysicalMemory, from: number, preserved: ReadonlySet<string>, skip: ReadonlySet<number>): number[] {
  const isNode = (pfn: number): boolean => preserved.has(`${pfn}:0`) || preserved.has(`${pfn}:1`) || preserved.has(`${pfn - 1}:1`);
  const seen = new Set<number>([from]);
  const out: number[] = [];
  let level = [from];
  for (let depth = 0; depth < 3 && level.length; depth++) {
    const next: number[] = [];
    for (const page of level) {
      for (let o = 0; o < PAGE_SIZE; o += 8) {
        const v = ram.readU64(page * PAGE_SIZE + o);
        if (v === 0 || v % PAGE_SIZE !== 0 || !ram.isRam(v, PAGE_SIZE)) continue;
        const q = v / PAGE_SIZE;
        if (seen.has(q) || skip.has(q) || !isNode(q) || out.length >= 48) continue;
        seen.add(q);
        out.push(q);
        next.push(q);
      }
    }
    level = next;
  }
  return out;
}

function boot(base: Pick<Base, 'ranges' | 'pages' | 'params' | 'opts'>, mutate?: (ram: PhysicalMemory) => void): Kernel {
  const machine = machineFor({ ranges: base.ranges });
  const ram = machine.device(PhysicalMemory);
  for (const [pfn, bytes] of base.pages) ram.write(pfn * PAGE_SIZE, bytes);
  mutate?.(ram);
  return machine.bootFrom(base.params, { image: kernelImage({ mem: base.opts.mem, seed: base.opts.seed }) });
}

/**
 * Restores and finishes the next kernel and checks everything the base preserved: the plugins' own checks (the
 * self-test's folios and checksums, kstate, vmalloc, memblock, reserve_mem), the demo's memfd files, the
 * kho-slab objects and the LUO session's memfds byte for byte, and no preserved block left unrestored. An error
 * anywhere is a refusal (`problems`); bytes that differ with no error said are `lost`.
 */
function verify(base: Base, k: Kernel): { problems: string[]; lost?: string } {
  const problems: string[] = [];
  let lost: string | undefined;
  const kho = k.get(Kho);
  if (!kho.incomingHandover) problems.push(`revival refused: ${kho.stats().revivalError ?? 'no handover'}`);
  const r = k.restore();
  for (const [name, o] of Object.entries(r.plugins)) if (!o.ok) problems.push(`${name}: ${o.error}`);
  if (kho.incomingHandover) {
    const files = verifyDemoFiles(k, base.opts.seed);
    problems.push(...files.problems.filter((x) => /E[A-Z]+:/.test(x)).map((x) => `memfd ${x}`));
    const wrong = files.problems.filter((x) => !/E[A-Z]+:/.test(x));
    if (wrong.length) lost ??= `memfd ${wrong[0]}`;
    const ram = k.get(PhysicalMemory);
    for (const o of base.slab) {
      try {
        k.get(KhoSlab).restoreSlab(o.ptr);
      } catch (e) {
        problems.push(`slab object ${hex(o.ptr)}: ${describeError(e, { errno: true })}`);
        continue;
      }
      if (Buffer.compare(ram.read(o.ptr, o.bytes.length), o.bytes) !== 0) lost ??= `slab object ${hex(o.ptr)} came back with other bytes`;
      k.get(Slab).kfree(o.ptr);
    }
    try {
      const q = k.get(Vfs).spawn('vmm');
      const dev = luoOpenDevice(q);
      const s = luoRetrieveSession(q, dev, LUO_SESSION);
      for (const f of base.luo) {
        const fd = luoRetrieveFd(q, s, f.token);
        const got = q.pread(fd, 0, q.fsize(fd));
        if (got.length !== f.bytes.length || Buffer.compare(got, f.bytes) !== 0) lost ??= `LUO memfd token ${f.token} came back with other bytes (${got.length} bytes, wanted ${f.bytes.length})`;
        q.close(fd);
      }
      luoSessionFinish(q, s);
      q.exit();
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      problems.push(`LUO session ${LUO_SESSION}: ${describeError(e, { errno: true })}`);
    }
  }
  const f = k.finish();
  for (const [name, o] of Object.entries(f.plugins)) if (!o.ok) problems.push(`${name}: ${o.error}`);
  const unrestored = Number(f.plugins.kho?.report?.unrestoredBlocks ?? 0);
  if (unrestored > 0) problems.push(`${unrestored} preserved blocks left unrestored`);
  return { problems, ...(lost ? { lost } : {}) };
}

const MUTATIONS: MutationKind[] = [
  'bit-flip',
  'random-word',
  'pointer-outside-ram',
  'pointer-into-scratch',
  'pointer-to-itself',
  'pointer-to-other',
  'count-past-end',
  'huge-size',
  'cycle',
  'shared-node',
  'duplicate-record',
  'overlap-record',
];

/** The image file's parts the image mutations aim at (the rest of the file is the RAM the other targets cover). */
const IMAGE_TARGET = 'image ELF headers and notes';

/** The base of each demo configuration, built once per thread. */
const bases = new Map<string, Base>();

function baseFor(demo: Partial<DemoOptions>): Base {
  const key = JSON.stringify(demo);
  let b = bases.get(key);
  if (!b) bases.set(key, (b = buildBase(demo)));
  return b;
}

/** The random numbers of case `index` of a run seeded `seed`: each case its own, so cases run in any order or thread. */
function caseRandom(seed: number, index: number): () => number {
  return seededRandom((Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(index + 1, 0xc2b2ae35)) >>> 0);
}

/** Picks a word of the structure (aligned to `size` bytes) whose value `want` accepts, or a random one. */
function pickWord(ram: PhysicalMemory, phys: number, span: number, size: 4 | 8, want: (v: number) => boolean, int: (n: number) => number): number {
  const hits: number[] = [];
  for (let o = 0; o + size <= span; o += size) {
    const v = size === 8 ? ram.readU64(phys + o) : ram.readU32(phys + o);
    if (want(v)) hits.push(o);
  }
  return hits.length ? hits[int(hits.length)] : Math.min(int(Math.ceil(span / size)) * size, PAGE_SIZE - size);
}

const isPointer = (ram: PhysicalMemory) => (v: number) => v !== 0 && v % PAGE_SIZE === 0 && ram.isRam(v, PAGE_SIZE);

/**
 * Applies one mutation to page `page` of `target`; returns where and what it wrote. Structure-aware kinds look for
 * the words they aim at: counts and lengths (small values) pushed past their container, sizes made huge, pointers
 * turned back into the structure (a cycle) or onto a node another pointer already names (a shared node), records
 * repeated over the next one or shifted half over it.
 */
function mutate(ram: PhysicalMemory, base: Base, target: FuzzTarget, page: number, mutation: MutationKind, int: (n: number) => number): string {
  const pagePhys = page * PAGE_SIZE;
  const span = target.used?.get(page) ?? PAGE_SIZE;
  const pointer = isPointer(ram);
  const put64 = (off: number, value: bigint): string => {
    ram.writeU64(pagePhys + off, value);
    return `${hex(pagePhys + off)} := ${hex(value)}`;
  };
  switch (mutation) {
    case 'bit-flip': {
      const off = int(span);
      const bit = int(8);
      ram.writeU8(pagePhys + off, ram.readU8(pagePhys + off) ^ (1 << bit));
      return `${hex(pagePhys + off)} bit ${bit}`;
    }
    case 'random-word':
      return put64(Math.min(int(Math.ceil(span / 8)) * 8, PAGE_SIZE - 8), BigInt(int(2 ** 32)) * 2n ** 32n + BigInt(int(2 ** 32)));
    case 'count-past-end': {
      const off = pickWord(ram, pagePhys, span, 4, (v) => v > 0 && v < 65536, int);
      const v = ram.readU32(pagePhys + off);
      const value = [v + 1, v + PAGE_SIZE, v * 2 + 1, 0x7fffffff, 0xffffffff][int(5)] >>> 0;
      ram.writeU32(pagePhys + off, value);
      return `${hex(pagePhys + off)} u32 ${v} := ${value}`;
    }
    case 'huge-size': {
      const off = pickWord(ram, pagePhys, span, 8, (v) => v > 0 && v < 2 ** 32, int);
      return put64(off, [2n ** 50n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 40n][int(5)]);
    }
    case 'cycle': {
      // a pointer of the structure turned back to its first page (a list or tree that reaches itself)
      const off = pickWord(ram, pagePhys, span, 8, pointer, int);
      return put64(off, BigInt(target.pages[0] * PAGE_SIZE));
    }
    case 'shared-node': {
      // two pointers naming one node: the second pointer takes the first one's value
      const ptrs: number[] = [];
      for (const q of target.pages) for (let o = 0; o + 8 <= (target.used?.get(q) ?? PAGE_SIZE); o += 8) if (pointer(ram.readU64(q * PAGE_SIZE + o))) ptrs.push(q * PAGE_SIZE + o);
      if (ptrs.length < 2) return put64(pickWord(ram, pagePhys, span, 8, pointer, int), BigInt(pagePhys));
      const a = ptrs[int(ptrs.length)];
      let b = ptrs[int(ptrs.length)];
      if (b === a) b = ptrs[(ptrs.indexOf(a) + 1) % ptrs.length];
      const value = ram.readU64(a);
      ram.writeU64(b, value);
      return `${hex(b)} := ${hex(value)} (as ${hex(a)})`;
    }
    case 'duplicate-record':
    case 'overlap-record': {
      const len = [16, 24, 32, 48, 64][int(5)];
      if (span < 2 * len) return put64(0, 0n);
      const from = int(Math.floor((span - len) / 8) + 1) * 8;
      const to = Math.min(mutation === 'duplicate-record' ? from + len : from + len / 2, span - len);
      ram.write(pagePhys + to, Uint8Array.from(ram.read(pagePhys + from, len)));
      return `${len} bytes at ${hex(pagePhys + from)} copied to ${hex(pagePhys + to)}`;
    }
    default: {
      // pointer redirections: prefer a word that holds a pointer (a page-aligned RAM address)
      const off = pickWord(ram, pagePhys, span, 8, pointer, int);
      const value =
        mutation === 'pointer-outside-ram'
          ? BigInt(2 ** 45 + int(1024) * PAGE_SIZE)
          : mutation === 'pointer-into-scratch'
            ? BigInt(base.scratch[int(base.scratch.length)].addr + int(64) * PAGE_SIZE)
            : mutation === 'pointer-to-itself'
              ? BigInt(pagePhys)
              : BigInt(otherPage(base.targets, target, int) * PAGE_SIZE);
      return put64(off, value);
    }
  }
}

/**
 * Recomputes the checksum that guards `target` after a mutation, so the structure's own checks are what the case
 * tests: the tracker's crc32c in the root FDT (over the tree's pages as the next kernel lists them; a tree too
 * damaged to list keeps its stale checksum), or the kstate stream's segment header and record crc32cs. Returns
 * whether it did.
 */
function recomputeCrc(ram: PhysicalMemory, base: Base, target: FuzzTarget): boolean {
  if (target.kstateSegments) return recomputeKstateCrcs(ram, target.kstateSegments);
  if (target.name !== 'tracker' && target.name !== 'root FDT') return false;
  let crc: number;
  let fdt;
  try {
    fdt = decodeFdt(ram.read(base.fdtPhys, PAGE_SIZE));
    if (!fdt.getProp(PROP_PRESERVED_MEMORY_MAP_CRC)) return false;
    crc = pagesCrc(ram, incomingTreeNodePfns(ram, Number(fdt.getU64LE(PROP_PRESERVED_MEMORY_MAP) ?? BigInt(base.mapPhys))));
  } catch (e) {
    if (e instanceof KernelError) return false;
    throw e;
  }
  const c = new Uint8Array(4);
  new DataView(c.buffer).setUint32(0, crc, true);
  fdt.setProp(PROP_PRESERVED_MEMORY_MAP_CRC, c);
  try {
    ram.write(base.fdtPhys, encodeFdt(fdt, { totalSize: PAGE_SIZE }));
  } catch (e) {
    if (e instanceof KernelError) return false;
    throw e;
  }
  return true;
}

/**
 * Recomputes the kstate stream's checksums after a mutation: every segment header's crc32c, and every record's
 * crc32c over the logical stream as the base's segments hold it (records are walked by their body lengths as they
 * now read; the walk stops at one that runs past the end). The content checks of kstate are then what is tested.
 */
function recomputeKstateCrcs(ram: PhysicalMemory, segments: ReadonlyArray<{ phys: number; payload: number }>): boolean {
  for (const sg of segments) ram.writeU32(sg.phys + KSTATE_SEGMENT_CRC_SPAN, crc32c(ram.read(sg.phys, KSTATE_SEGMENT_CRC_SPAN)));
  const total = segments.reduce((n, sg) => n + sg.payload, 0);
  const bytes = new Uint8Array(total);
  let off = 0;
  for (const sg of segments) {
    bytes.set(ram.read(sg.phys + KSTATE_SEGMENT_HEADER_SIZE, sg.payload), off);
    off += sg.payload;
  }
  const view = new DataView(bytes.buffer);
  const lenAt = KStateRecordStruct.offsetOf('body_len');
  const crcAt = KStateRecordStruct.offsetOf('crc');
  for (let pos = 0; pos + KSTATE_RECORD_HEADER_SIZE <= total; ) {
    const end = pos + KSTATE_RECORD_HEADER_SIZE + view.getUint32(pos + lenAt, true);
    if (end > total) break;
    view.setUint32(pos + crcAt, crc32c(bytes, pos + KSTATE_RECORD_HEADER_SIZE, end, crc32c(bytes, pos, pos + crcAt)), true);
    pos = end;
  }
  off = 0;
  for (const sg of segments) {
    ram.write(sg.phys + KSTATE_SEGMENT_HEADER_SIZE, bytes.subarray(off, off + sg.payload));
    off += sg.payload;
  }
  return true;
}

/** Case `index` of a run seeded `seed` on `base`: the mutation, the boot, the verdict. */
export function runFuzzCase(seed: number, index: number, opts: { hangMs?: number; demo?: Partial<DemoOptions>; scope?: FuzzScope } = {}): FuzzCase {
  const base = baseFor(opts.demo ?? {});
  const rnd = caseRandom(seed, index);
  const int = (n: number): number => Math.floor(rnd() * n);
  const scope = opts.scope ?? 'all';
  // one case in eight mutates the image file (its headers and notes) when both are fuzzed
  const onImage = scope === 'image' || (scope === 'all' && int(8) === 0);
  const t0 = performance.now();
  let outcome: FuzzCase['outcome'] = 'accepted';
  let detail: string | undefined;
  let at = '';
  let crc: 'recomputed' | undefined;
  let target = IMAGE_TARGET;
  let mutation: MutationKind;
  try {
    let k: Kernel;
    if (onImage) {
      mutation = (['bit-flip', 'random-word', 'count-past-end', 'huge-size', 'duplicate-record', 'overlap-record'] as const)[int(6)];
      const bytes = Uint8Array.from(base.image);
      at = mutateBytes(bytes, base.imageHead, mutation, int);
      const img = decodeImage(bytes);
      const ranges = img.machine.ram.map((r) => ({ start: r.start, size: r.size, node: r.node }));
      const pages = new Map<number, Uint8Array>();
      for (const sg of img.segments) for (let o = 0; o < sg.bytes.length; o += PAGE_SIZE) pages.set((sg.paddr + o) / PAGE_SIZE, sg.bytes.subarray(o, o + PAGE_SIZE));
      const cmdline = typeof img.machine.cmdline === 'string' ? img.machine.cmdline : '';
      const params = new (base.params.constructor as new (c: string, m: Map<number, Uint8Array>) => BootParams)(cmdline, new Map([[SETUP_KHO, img.khoData]]));
      k = boot({ ranges, pages, params, opts: base.opts });
    } else {
      const t = base.targets[int(base.targets.length)];
      target = t.name;
      mutation = MUTATIONS[int(MUTATIONS.length)];
      const page = t.pages[int(t.pages.length)];
      const withCrc = int(2) === 0;
      k = boot(base, (ram) => {
        at = mutate(ram, base, t, page, mutation, int);
        if (withCrc && recomputeCrc(ram, base, t)) crc = 'recomputed';
      });
    }
    const kho = k.get(Kho);
    const inc = kho.incomingHandover;
    const extras = inc ? inc.pfns.map((pfn, j) => ({ pfn, order: inc.orders[j] })).filter((b) => !base.preserved.has(`${b.pfn}:${b.order}`)) : [];
    const named = (b: { pfn: number; order: number }): string => `block ${hex(b.pfn * PAGE_SIZE)} order ${b.order}`;
    if (extras.length > 0 && crc !== 'recomputed') {
      // the map's checksum was the old kernel's: a block it did not preserve must have been refused
      outcome = 'false-restore';
      detail = `stamped ${named(extras[0])}, which the old kernel did not preserve, under its stale checksum`;
    } else {
      const v = verify(base, k);
      // An extra block in a map whose checksum was recomputed is what the map says was preserved: no kernel can
      // tell it from a real one. What must hold is that nobody takes it (no owner's metadata names it) and that it
      // stays reserved and is named at finish: a stamp still there after finish means exactly that.
      const taken = extras.find((b) => !kho.isPreservedIncoming(b.pfn, b.order));
      if (taken) {
        outcome = 'false-restore';
        detail = `${named(taken)}, which the old kernel did not preserve, was restored`;
      } else if (v.lost && v.problems.length === 0) {
        outcome = 'lost';
        detail = v.lost;
      } else if (v.problems.length) {
        outcome = 'refused';
        detail = [...v.problems, ...(extras.length ? [`${named(extras[0])} (not preserved; the map's checksum recomputed) left reserved`] : [])].join('; ');
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
  if (ms > (opts.hangMs ?? 5000) && outcome !== 'crash') {
    outcome = 'hang';
    detail = `took ${Math.round(ms)} ms`;
  }
  return { index, target, mutation: mutation!, at, ...(crc ? { crc } : {}), outcome, ...(detail ? { detail } : {}), ms: Math.round(ms * 10) / 10 };
}

/** Mutates the first `head` bytes of an image file (ELF header, program headers, notes) in place. */
function mutateBytes(bytes: Uint8Array, head: number, mutation: MutationKind, int: (n: number) => number): string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const off = int(Math.floor(head / 8)) * 8;
  switch (mutation) {
    case 'bit-flip': {
      const at = int(head);
      const bit = int(8);
      bytes[at] ^= 1 << bit;
      return `file byte ${at} bit ${bit}`;
    }
    case 'count-past-end': {
      const at = int(Math.floor(head / 2)) * 2;
      const v = view.getUint16(at, true);
      const value = [v + 1, 0xffff, v * 2 + 1][int(3)] & 0xffff;
      view.setUint16(at, value, true);
      return `file u16 at ${at}: ${v} := ${value}`;
    }
    case 'huge-size': {
      const value = [2n ** 40n, 2n ** 50n, 2n ** 63n, 2n ** 64n - 1n][int(4)];
      view.setBigUint64(off, value, true);
      return `file u64 at ${off} := ${hex(value)}`;
    }
    case 'duplicate-record':
    case 'overlap-record': {
      // program headers and notes are the records: one copied over the next (or half over it)
      const len = [56, 24, 16][int(3)];
      const to = Math.min(mutation === 'duplicate-record' ? off + len : off + len / 2, head - len);
      bytes.copyWithin(to, off, off + len);
      return `file bytes ${off}..${off + len} copied to ${to}`;
    }
    default: {
      const value = BigInt(int(2 ** 32)) * 2n ** 32n + BigInt(int(2 ** 32));
      view.setBigUint64(off, value, true);
      return `file u64 at ${off} := ${hex(value)}`;
    }
  }
}

/** An empty result, to which {@link recordCase} adds cases in index order. */
export function emptyFuzzResult(): FuzzResult {
  return { cases: 0, refused: 0, accepted: 0, crashes: [], hangs: [], falseRestores: [], lost: [], byTarget: {}, byMutation: {}, reasons: {} };
}

/** Adds one case to a result (cases must come in index order for the report to be the same whatever ran them). */
export function recordCase(r: FuzzResult, c: FuzzCase): void {
  record(r, c);
}

/**
 * Mutates a valid handover `cases` times and boots each: the RAM structures (root FDT, tracker, scratch array,
 * kstate stream, vmalloc chunks, memfd table, memblock FDT, kexec-metadata, LUO and kho-slab blobs and the pages
 * they link) with bit flips, random words, redirected pointers, counts and sizes past their container, cycles,
 * shared nodes, repeated and overlapping records (half of the tracker, root FDT and kstate cases with their
 * checksums recomputed), and the image file's ELF headers and notes. A case must end refused (the kernel or a
 * subsystem says what it refused) or accepted (everything verified); never a crash (anything but a KernelError
 * escaping), a hang, a preserved byte changed with nothing said, or a false restore: a block the old kernel did
 * not preserve that is stamped under the map's stale checksum, or restored by anyone. (A map whose checksum was
 * recomputed is the truth of what was preserved: an extra block in it must stay reserved and be named at finish.)
 * Case `i` depends only on the seed and `i`.
 */
export function fuzzHandovers(opts: FuzzOptions & { scope?: FuzzScope }): FuzzResult {
  const result = emptyFuzzResult();
  for (let i = 0; i < opts.cases; i++) {
    const c = runFuzzCase(opts.seed, i, { hangMs: opts.hangMs, demo: opts.demo, scope: opts.scope });
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
  const m = `${c.mutation}${c.crc ? '+crc' : ''}`;
  r.byMutation[m] = (r.byMutation[m] ?? 0) + 1;
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
  else if (c.outcome === 'lost') r.lost.push(c);
  else r.falseRestores.push(c);
}

/** Cases a worker runs per task (fewer messages; small enough to spread a short run over every worker). */
const FUZZ_BATCH = 20;

/**
 * {@link fuzzHandovers} on `jobs` worker threads (main's SweepPool): the cases are the same (case i depends only on
 * the seed and i) and are recorded in index order, so the report is the same whatever `jobs` is. A worker that
 * dies fails the cases of its batch as crashes.
 */
export async function fuzzHandoversParallel(opts: FuzzOptions & { jobs: number }): Promise<FuzzResult> {
  const tasks: Array<{ kind: 'fuzz'; seed: number; from: number; count: number; hangMs?: number }> = [];
  for (let from = 0; from < opts.cases; from += FUZZ_BATCH) tasks.push({ kind: 'fuzz' as const, seed: opts.seed, from, count: Math.min(FUZZ_BATCH, opts.cases - from), ...(opts.hangMs ? { hangMs: opts.hangMs } : {}) });
  const pool = new SweepPool({ jobs: opts.jobs, timeoutMs: Math.max(120_000, FUZZ_BATCH * (opts.hangMs ?? 5000) * 2) });
  let done = 0;
  try {
    const outcomes = await pool.run<FuzzCase[]>(tasks, (_i, o) => {
      if (o.ok) for (const c of o.value) opts.onCase?.({ ...c, index: done++ });
    });
    const result = emptyFuzzResult();
    outcomes.forEach((o, i) => {
      const t = tasks[i];
      if (o.ok) for (const c of o.value) record(result, c);
      else for (let j = 0; j < t.count; j++) record(result, { index: t.from + j, target: '(worker)', mutation: 'bit-flip', at: '', outcome: 'crash', detail: o.error, ms: 0 });
    });
    return result;
  } finally {
    await pool.close();
  }
}
