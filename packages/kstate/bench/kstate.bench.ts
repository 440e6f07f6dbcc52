import { defineBench, seededRandom } from '@kho/kernel/bench';
import { PAGE_SIZE } from '@kho/physmem';
import { bool, describeState, phys, str, u16, u32, vmallocBuf } from '../src/model';
import { BareMachine, type BareHandover, type BareKernel } from '../src/testing';

/**
 * kstate's own cost, on bare RAM (this package may not build a kernel with memblock): BareKho stands for KHO,
 * with a map for the tracker, so these figures leave out the radix tree's cost (see radix/* for it). The 64 MiB
 * case uses the real Vmalloc and KhoVmalloc over BareKho.
 */

const MiB = 2 ** 20;

interface Small {
  id: number;
  flags: number;
  addr: number;
  name: string;
  on: boolean;
}

const SmallD = describeState<Small>({ name: 'small', version: 1, fields: [u32('id'), u16('flags'), phys('addr'), str('name', 16), bool('on')] });
/** Bytes of Small's fields as a C struct would hold them, packed: 4 + 2 + 8 + 16 + 1. */
const SMALL_RAW = 31;

const BufD = describeState<{ log: number }>({ name: 'buf', version: 1, fields: [vmallocBuf('log')] });
/** The field is the 16-byte kho_vmalloc descriptor; the buffer's pages are preserved in place. */
const BUF_RAW = 16;

/** Best of `runs` timings of `body` (milliseconds), each after `setup`; the first run warms up and is dropped. */
function best(runs: number, setup: () => void, body: () => void, teardown: () => void = () => undefined): number {
  let min = Infinity;
  for (let i = 0; i <= runs; i++) {
    setup();
    const t0 = performance.now();
    body();
    const ms = performance.now() - t0;
    teardown();
    if (i > 0) min = Math.min(min, ms);
  }
  return min;
}

function round(v: number): number {
  return +v.toPrecision(4);
}

/** A kernel with `n` small objects registered, and its machine. */
function smallKernel(n: number): { machine: BareMachine; k: BareKernel } {
  const machine = new BareMachine({ mem: 64 * MiB });
  const k = machine.boot();
  const rand = seededRandom(0x5a11);
  for (let i = 0; i < n; i++) {
    const obj: Small = { id: i, flags: i & 0xffff, addr: Math.floor(rand() * 2 ** 40) * PAGE_SIZE, name: `obj-${i}`, on: (i & 1) === 1 };
    k.kstate.register(SmallD, i, obj);
  }
  return { machine, k };
}

defineBench({
  name: 'kstate/save-100k-small',
  run(ctx) {
    const n = ctx.quick ? 10_000 : 100_000;
    const { k } = smallKernel(n);
    let bytes = 0;
    const ms = best(
      ctx.quick ? 3 : 5,
      () => undefined,
      () => {
        bytes = k.kstate.save().bytes;
      },
      () => k.kstate.cancel(),
    );
    return { value: round(n / (ms / 1000)), unit: 'objects/s', objectsPerSecond: round(n / (ms / 1000)), streamBytesPerObject: round(bytes / n), rawFieldBytesPerObject: SMALL_RAW, objects: n, ms: round(ms) };
  },
});

defineBench({
  name: 'kstate/restore-100k-small',
  run(ctx) {
    const n = ctx.quick ? 10_000 : 100_000;
    const { machine, k: k1 } = smallKernel(n);
    const bytes = k1.kstate.save().bytes;
    // Each timed run boots a new kernel from the same handover (restore only reads the stream's pages).
    const handover: BareHandover = k1.kho.handover();
    let k2: BareKernel | undefined;
    let check = 0;
    const ms = best(
      ctx.quick ? 3 : 5,
      () => {
        k2 = machine.boot(handover);
      },
      () => {
        const ks = k2!.kstate;
        for (let i = 0; i < n; i++) check += ks.restore(SmallD, i).object.id;
      },
    );
    if (check !== ((ctx.quick ? 3 : 5) + 1) * ((n * (n - 1)) / 2)) throw new Error(`kstate bench: restored ids sum to ${check}`);
    return { value: round(n / (ms / 1000)), unit: 'objects/s', objectsPerSecond: round(n / (ms / 1000)), streamBytesPerObject: round(bytes / n), rawFieldBytesPerObject: SMALL_RAW, objects: n, ms: round(ms) };
  },
});

/** A kernel with one object holding a vmalloc buffer of `size` bytes (filled). */
function bufKernel(size: number): { machine: BareMachine; k: BareKernel; addr: number } {
  const machine = new BareMachine({ mem: size * 2 + 64 * MiB });
  const k = machine.boot();
  const addr = k.vmalloc.vmalloc(size);
  k.vmalloc.fill(addr, size, 0x5c);
  k.kstate.register(BufD, 0, { log: addr });
  return { machine, k, addr };
}

defineBench({
  name: 'kstate/save-64m-vmalloc',
  run(ctx) {
    const size = ctx.quick ? 8 * MiB : 64 * MiB;
    const { k } = bufKernel(size);
    let bytes = 0;
    const ms = best(
      ctx.quick ? 3 : 5,
      () => undefined,
      () => {
        bytes = k.kstate.save().bytes;
      },
      () => k.kstate.cancel(),
    );
    return {
      value: round(1000 / ms),
      unit: 'objects/s',
      objectsPerSecond: round(1000 / ms),
      streamBytesPerObject: bytes,
      rawFieldBytesPerObject: BUF_RAW,
      bufferBytes: size,
      pagesPerSecond: round(size / PAGE_SIZE / (ms / 1000)),
      ms: round(ms),
    };
  },
});

defineBench({
  name: 'kstate/restore-64m-vmalloc',
  run(ctx) {
    const size = ctx.quick ? 8 * MiB : 64 * MiB;
    const { machine, k: k1 } = bufKernel(size);
    const bytes = k1.kstate.save().bytes;
    const handover = k1.kho.handover();
    let k2: BareKernel | undefined;
    let addr = 0;
    const ms = best(
      ctx.quick ? 3 : 5,
      () => {
        k2 = machine.boot(handover);
      },
      () => {
        addr = k2!.kstate.restore(BufD, 0).object.log;
      },
      () => {
        if (k2!.vmalloc.read(addr + size - 1, 1)[0] !== 0x5c) throw new Error('kstate bench: the restored buffer lost its bytes');
      },
    );
    return {
      value: round(1000 / ms),
      unit: 'objects/s',
      objectsPerSecond: round(1000 / ms),
      streamBytesPerObject: bytes,
      rawFieldBytesPerObject: BUF_RAW,
      bufferBytes: size,
      pagesPerSecond: round(size / PAGE_SIZE / (ms / 1000)),
      ms: round(ms),
    };
  },
});
