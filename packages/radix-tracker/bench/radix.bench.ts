import { bareAllocator } from '@kho/physmem/testing';
import { KernelLog, LifecycleBus } from '@kho/kernel';
import { RADIX_WORKLOAD_BASE_PFN, radixW2Sequence, radixWorkload } from '../src/testing';
import { defineBench, runNative, seededRandom, timeNs } from '@kho/kernel/bench';
import { PAGE_SIZE, PhysicalMemory, type RamRange, pfn, toOrder } from '@kho/physmem';
import { RadixTracker, readIncomingTree } from '../src/radix-tree';

const MiB = 2 ** 20;
/** RAM at 0 that the tree's own nodes come from (the buddy allocator serves only this range). */
const NODE_RAM = 256 * MiB;
/** First pfn of the dense and mixed blocks: 4 GiB. */
const BASE_PFN = RADIX_WORKLOAD_BASE_PFN;

/**
 * A tracker over a machine with NODE_RAM at 0 for its nodes, plus `extra` ranges that exist only so that the
 * incoming reader, which checks every block against RAM, accepts the blocks (they are never allocated).
 */
function machine(extra: RamRange[] = []): { ram: PhysicalMemory; tree: RadixTracker } {
  const { ram, buddy } = bareAllocator([{ start: 0, size: NODE_RAM, node: 0 }, ...extra], [[0, NODE_RAM / PAGE_SIZE]]);
  const log = new KernelLog(new LifecycleBus(), 1);
  return { ram, tree: new RadixTracker(ram, buddy, log) };
}

/**
 * The fastest of five timeNs runs after a short untimed warm-up (so the optimising compiler has seen the loop):
 * the machine is shared, and the best run is the one least disturbed by other processes (radix_ref.c keeps its
 * best of three the same way).
 */
function measure(fn: () => number, quick: boolean): ReturnType<typeof timeNs> {
  timeNs(fn, quick ? 30 : 200);
  let best = timeNs(fn, quick ? 20 : 200);
  for (let i = 1; i < 5; i++) {
    const t = timeNs(fn, quick ? 20 : 200);
    if (t.nsPerOp < best.nsPerOp) best = t;
  }
  return best;
}

interface TreeFigures {
  addNsPerBlock: number;
  walkNsPerBlock: number;
  bytesPerBlock: number;
  blocks: number;
}

/**
 * Times building the tree from the adds `pfns` (each round frees the previous tree first, so every round pays
 * for its node allocations; the frees are a few pages per thousand blocks) and walking it: add time per add (as
 * radix_ref counts it, duplicates included), walk time per block. Checks the walk saw every distinct block.
 */
function addAndWalk(tree: RadixTracker, pfns: Float64Array, orders: Uint8Array, quick: boolean): TreeFigures {
  const n = pfns.length;
  const build = (): number => {
    tree.destroy();
    tree.init();
    for (let i = 0; i < n; i++) tree.add(pfn(pfns[i]), toOrder(orders[i]));
    return n;
  };
  const add = measure(build, quick);
  const { blocks, metadataPages } = tree.stats();
  let seen = 0;
  const visit = (): void => void seen++;
  const walk = measure(() => {
    tree.walk(visit);
    return blocks;
  }, quick);
  const distinct = new Set(Array.from(pfns, (p, i) => p * 16 + orders[i])).size;
  if (blocks !== distinct || seen % distinct !== 0) throw new Error(`radix bench: ${blocks} blocks recorded, walk saw ${seen}, wanted multiples of ${distinct}`);
  return { addNsPerBlock: round(add.nsPerOp), walkNsPerBlock: round(walk.nsPerOp), bytesPerBlock: round((metadataPages * PAGE_SIZE) / blocks), blocks };
}

function round(v: number): number {
  return +v.toFixed(2);
}

/**
 * radix_ref's figures for `workload` (W1, W2), or why there are none: the best of the runs given (radix_ref keeps
 * its best of three repetitions, the lab its best of five timings: best against best is what stays comparable
 * when other jobs load the machine unevenly).
 */
function native(workload: 'W1' | 'W2', runs: ReadonlyArray<ReturnType<typeof runNative>>): Record<string, unknown> {
  const lines = runs.flatMap((r) => (r.ok ? [r.lines[0]] : []));
  if (lines.length === 0) {
    const failed = runs.find((r) => !r.ok);
    return { native: `skipped: ${failed && !failed.ok ? failed.reason : `no ${workload} output`}` };
  }
  const best = (k: string): number => Math.min(...lines.map((l) => l[k] as number));
  return { nativeAddNs: best('add_ns_per_block'), nativeWalkNs: best('walk_ns_per_block'), nativeBlocks: lines[0].blocks as number };
}

/** Ratios of the lab's figures to radix_ref's from the same run (absent when radix_ref could not run). */
function ratios(f: TreeFigures, c: Record<string, unknown>): Record<string, number> {
  if (typeof c.nativeAddNs !== 'number' || typeof c.nativeWalkNs !== 'number') return {};
  return { addVsC: round(f.addNsPerBlock / c.nativeAddNs), walkVsC: round(f.walkNsPerBlock / c.nativeWalkNs) };
}

defineBench({
  name: 'radix/dense',
  target: 'walk <= 10 ns/block, add <= 75 ns/block (W1; radix_ref.c in the same run for the ratio)',
  targets: [
    { field: 'walkNsPerBlock', max: 10 },
    { field: 'addNsPerBlock', max: 75 },
  ],
  run(ctx) {
    const before = runNative('radix_ref', ['W1']);
    const work = radixWorkload('dense', ctx.quick);
    const n = work.pfns.length;
    // The blocks are RAM too, so that the incoming reader, which refuses blocks outside RAM, can be timed.
    const { ram, tree } = machine([{ start: BASE_PFN * PAGE_SIZE, size: n * PAGE_SIZE, node: 0 }]);
    const figures = addAndWalk(tree, Float64Array.from(work.pfns), new Uint8Array(n), ctx.quick);
    // The next kernel's side: walkIncoming (validate the whole tree, then visit) as kho-core calls it, and
    // readIncomingTree (validate, then fill arrays) as the inspector calls it.
    const root = tree.rootPhys;
    let seen = 0;
    const incoming = measure(() => {
      tree.walkIncoming(root, () => void seen++);
      return n;
    }, ctx.quick);
    const read = measure(() => readIncomingTree(ram, root).count, ctx.quick);
    if (seen % n !== 0) throw new Error(`radix bench: the incoming walk saw ${seen} blocks, wanted a multiple of ${n}`);
    // W1 is 2^20 pages; quick mode adds 2^17 (the C figures are per block, so the ratio still compares).
    const c = native('W1', [before, runNative('radix_ref', ['W1'])]);
    return {
      value: figures.walkNsPerBlock,
      unit: 'ns/block',
      ...figures,
      walkIncomingNsPerBlock: round(incoming.nsPerOp),
      readIncomingNsPerBlock: round(read.nsPerOp),
      ...c,
      ...ratios(figures, c),
    };
  },
});

defineBench({
  name: 'radix/sparse',
  target: 'add and walk <= 3x radix_ref.c (W2, the same adds, in the same run)',
  targets: [
    { field: 'addVsC', max: 3 },
    { field: 'walkVsC', max: 3 },
  ],
  run(ctx) {
    // Always W2 in full: the ratio is to radix_ref's W2, and 100,000 adds take milliseconds. radix_ref runs
    // before and after the lab's timings.
    const before = runNative('radix_ref', ['W2']);
    const adds = radixW2Sequence();
    const { tree } = machine();
    const figures = addAndWalk(tree, adds, new Uint8Array(adds.length), ctx.quick);
    const c = native('W2', [before, runNative('radix_ref', ['W2'])]);
    const r = ratios(figures, c);
    return { value: r.addVsC ?? figures.addNsPerBlock, unit: r.addVsC !== undefined ? 'x C (add)' : 'ns/block (add)', ...r, ...figures, ...c, nativeBytesPerBlock: 336.44 };
  },
});

defineBench({
  name: 'radix/mixed',
  run(ctx) {
    const work = radixWorkload('mixed', ctx.quick);
    const { tree } = machine();
    const figures = addAndWalk(tree, Float64Array.from(work.pfns), Uint8Array.from(work.orders), ctx.quick);
    return { value: figures.addNsPerBlock, unit: 'ns/block (add)', ...figures };
  },
});

/**
 * The tree shape behind a cost Linux reported for the walk of this map at boot (the extended-scratch pass):
 * in a 64 GB VM, two 1 GiB memfds in 4 KiB pages made 0x80832 preservations in 69 radix nodes and the walk took
 * 21.8 ms, against 88 µs with two 1 MiB memfds. Here: 524,288 order-0 pages scattered over 59 leaves (7.4 GiB of
 * the VM's 64 GB) plus 2,098 order-1 blocks, 69 nodes in all; and 512 pages plus the same 2,098 blocks. The lab's
 * figure is walkIncoming as kho-core calls it at boot: check the whole tree, then visit every block.
 */
defineBench({
  name: 'radix/memfd-shape',
  run(ctx) {
    const GiB = 2 ** 30;
    const { tree } = machine([{ start: NODE_RAM, size: 64 * GiB - NODE_RAM, node: 0 }]);
    const rand = seededRandom(0x80832);
    const shape = (pages: number, leaves: number): { ms: number; blocks: number; nodes: number } => {
      tree.destroy();
      tree.init();
      // Order-0 pages at random in `leaves` leaves of 128 MiB from 1 GiB up, and 2,098 order-1 blocks from 32 GiB.
      const span = leaves * 32768;
      const first = GiB / PAGE_SIZE;
      const used = new Set<number>();
      while (used.size < pages) used.add(first + Math.floor(rand() * span));
      for (const p of used) tree.add(pfn(p), toOrder(0));
      for (let i = 0; i < 0x832; i++) tree.add(pfn((32 * GiB) / PAGE_SIZE + 2 * i), toOrder(1));
      const root = tree.rootPhys;
      let seen = 0;
      const t = measure(() => {
        tree.walkIncoming(root, () => void seen++);
        return 1;
      }, ctx.quick);
      return { ms: +(t.nsPerOp / 1e6).toFixed(3), blocks: tree.stats().blocks, nodes: tree.stats().metadataPages };
    };
    const big = shape(2 * 262144, 59);
    const small = shape(2 * 256, 1);
    if (big.blocks !== 0x80832 || big.nodes !== 69) throw new Error(`radix bench: the 2 GiB shape has ${big.blocks} blocks in ${big.nodes} nodes (wanted 0x80832 in 69)`);
    return {
      value: big.ms,
      unit: 'ms (walk of 0x80832 blocks in 69 nodes)',
      blocks: big.blocks,
      nodes: big.nodes,
      smallMs: small.ms,
      smallBlocks: small.blocks,
      smallNodes: small.nodes,
      linuxMs: 21.8,
      linuxSmallMs: 0.088,
      vsLinux: +(big.ms / 21.8).toFixed(3),
      smallVsLinux: +(small.ms / 0.088).toFixed(3),
    };
  },
});
