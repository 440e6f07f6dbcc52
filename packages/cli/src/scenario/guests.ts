import { inject, injectable, type DependencyContainer } from 'tsyringe';
import { Errno, KernelError, KernelLog, describeError, formatBytes, hex, registerPerBoot, seededBytes, withUnwind, type KernelModule, type KernelPlugin, type PluginReport } from '@kho/kernel';
import { BuddyAllocator, Folio, MAX_PAGE_ORDER, PAGE_SIZE, PhysicalMemory, pfn, toOrder, toPhysAddr, type Order } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KState, array, describe, str, u32, u64, vmallocBuf } from '@kho/kstate';
import { Vmalloc } from '@kho/vmalloc';
import { itemSeed } from './workload';

/**
 * Guest memory, as a VM host holds it: each guest is `size` bytes of folios of one order (2 MiB for a guest
 * backed by huge pages, 4 KiB pages for the tracker's worst case), allocated one by one from the buddy
 * allocator and preserved one by one, but never filled: preserving 784 GiB must not cost 784 GiB of host
 * memory. Verification in the next kernel, from the handover alone:
 * - every folio the state lists (as runs of consecutive folios) is restored with kho.restoreFolio and must come
 *   back with its order: the preserved-memory map, the stamps and the buddy allocator agree on every folio;
 * - a sample of folios (one in `stampEvery`, about 256 a guest) carries a 64-byte seeded stamp at its start,
 *   written before the jump and compared after it: the bytes of preserved memory survived;
 * - the guest's memory holds no other written page (PhysicalMemory.populatedPagesIn): nothing wrote to it;
 * - finish frees every folio, and the scenario then checks the free-page count against a cold boot's.
 * The runs are kept in a vmalloc buffer (pairs of u64: phys of the first folio, folios in the run) that kstate
 * hands over with the state (`scenario_guests`).
 */

/** Bytes of the stamp at the start of a sampled folio. */
export const GUEST_STAMP_BYTES = 64;
/** About this many folios of a guest are stamped. */
const STAMPS_PER_GUEST = 256;
/** Most guests a generation holds. */
export const GUESTS_MAX = 16;

/** One guest a generation makes (from the scenario's `preserve.guests`). */
export interface GuestSpec {
  readonly name: string;
  readonly size: number;
  readonly order: number;
}

export const GuestMemoryConfig = Symbol('GuestMemoryConfig');
export interface GuestMemoryConfig {
  readonly generation: number;
  readonly seed: number;
  readonly guests: readonly GuestSpec[];
}

interface GuestEntry {
  name: string;
  order: number;
  folios: bigint;
  stampEvery: number;
  seed: number;
  /** vmalloc address of the runs: u64 pairs (phys of the first folio, folios in the run). */
  runs: number;
  nrRuns: number;
}

interface GuestsState {
  generation: number;
  guests: GuestEntry[];
}

const GuestEntryDesc = describe<GuestEntry>({
  name: 'scenario_guest',
  version: 1,
  fields: [str('name', 32), u32('order'), u64('folios'), u32('stampEvery'), u32('seed'), vmallocBuf('runs'), u32('nrRuns')],
});

/** The guests' handover state (kstate `scenario_guests`, instance 0). */
export const GuestsStateDesc = describe<GuestsState>({ name: 'scenario_guests', version: 1, fields: [u32('generation'), array('guests', GuestEntryDesc)] });

/** What a generation handed over. */
export interface GuestsPreserved {
  readonly guests: number;
  readonly folios: number;
  readonly bytes: number;
}

/** What the next kernel found. */
export interface GuestsCheck {
  readonly listed: number;
  readonly verified: number;
  readonly folios: number;
  readonly bytes: number;
  readonly stamps: number;
  readonly problems: readonly string[];
}

/** One guest's folios in this kernel: head pfns in allocation order. */
interface Held {
  readonly name: string;
  readonly order: Order;
  readonly pfns: Float64Array;
}

/** The stamp of folio `index` of a guest seeded `seed`. */
function stampOf(seed: number, index: number): Uint8Array {
  return seededBytes(itemSeed(seed, 'stamp', index), GUEST_STAMP_BYTES);
}

@injectable()
export class GuestMemory implements KernelPlugin {
  readonly name = 'scenario-guests';
  readonly after = ['kho', 'kstate'];

  /** The outcome of the restore, when the previous kernel handed guests over. */
  lastRestore: GuestsCheck | undefined;

  private held: Held[] = [];
  private preserved = 0;
  private restored: Held[] = [];

  constructor(
    private readonly kho: Kho,
    private readonly buddy: BuddyAllocator,
    private readonly ram: PhysicalMemory,
    private readonly vm: Vmalloc,
    private readonly kstate: KState,
    private readonly log: KernelLog,
    @inject(GuestMemoryConfig) private readonly config: GuestMemoryConfig,
  ) {}

  /** Every guest this kernel made: its name, folio order and the folios' head pfns (tests use it to tamper). */
  get outgoing(): ReadonlyArray<{ readonly name: string; readonly order: number; readonly pfns: Float64Array }> {
    return this.held;
  }

  /**
   * Allocates every guest's folios, stamps the sample, lists the runs and registers the state (kstate saves it
   * at prepare). Throws ENOMEM (or what a service throws) after freeing everything it allocated.
   */
  generate(): GuestsPreserved {
    const c = this.config;
    if (c.guests.length === 0) return { guests: 0, folios: 0, bytes: 0 };
    const state: GuestsState = { generation: c.generation, guests: [] };
    const held: Held[] = [];
    let folios = 0;
    withUnwind((u) => {
      c.guests.forEach((g, gi) => {
        const n = g.size / (PAGE_SIZE * 2 ** g.order);
        if (!Number.isSafeInteger(n) || n < 1) throw new KernelError(Errno.EINVAL, `guest '${g.name}': ${g.size} bytes is not a whole number of order-${g.order} folios`);
        const pfns = new Float64Array(n);
        const order = toOrder(g.order);
        let got = 0;
        // One undo for the whole guest: a closure per folio would cost more than the folios' descriptors.
        u.push(() => {
          for (let i = got - 1; i >= 0; i--) this.buddy.folioPut(new Folio(pfn(pfns[i]), order));
        });
        // `got` counts a folio once it is held: `pfns[got++] = alloc()` would count one whose allocation threw
        for (; got < n; got++) pfns[got] = this.buddy.folioAlloc(g.order).pfn;
        const seed = itemSeed(c.seed, `guest:${g.name}`, gi);
        const stampEvery = Math.max(1, Math.floor(n / STAMPS_PER_GUEST));
        for (let i = 0; i < n; i += stampEvery) this.ram.write(pfns[i] * PAGE_SIZE, stampOf(seed, i));
        const runs = runsOf(pfns, 2 ** g.order);
        const bytes = new Uint8Array(runs.length * 8);
        const view = new DataView(bytes.buffer);
        runs.forEach((v, i) => view.setBigUint64(i * 8, BigInt(v), true));
        const addr = this.vm.vmalloc(Math.max(bytes.length, 8));
        u.push(() => this.vm.vfree(addr));
        this.vm.write(addr, bytes);
        state.guests.push({ name: g.name, order: g.order, folios: BigInt(n), stampEvery, seed, runs: addr, nrRuns: runs.length / 2 });
        held.push({ name: g.name, order, pfns });
        folios += n;
      });
      this.kstate.register(GuestsStateDesc, 0, state);
    });
    this.held = held;
    const bytes = c.guests.reduce((n, g) => n + g.size, 0);
    this.log.info('scenario', `generation ${c.generation}: ${held.length} guests, ${folios} folios, ${formatBytes(bytes)}`);
    return { guests: held.length, folios, bytes };
  }

  /** Preserves every guest folio; on failure unpreserves exactly those this call preserved, in reverse. */
  prepare(): void {
    withUnwind((u) => {
      u.push(() => this.unpreserveFirst(this.preserved));
      this.preserved = 0;
      for (const h of this.held) {
        for (let i = 0; i < h.pfns.length; i++) {
          this.kho.preserveFolio(new Folio(pfn(h.pfns[i]), h.order));
          this.preserved++;
        }
      }
    });
  }

  cancel(): void {
    this.unpreserveFirst(this.preserved);
  }

  /** Restores and checks every folio the state lists (see the file's comment); problems go in the report. */
  restore(): PluginReport | void {
    if (!this.kho.isKhoBoot()) return;
    let state: GuestsState;
    try {
      state = this.kstate.restore(GuestsStateDesc, 0).object;
    } catch (e) {
      if (e instanceof KernelError && e.errno === Errno.ENOENT) return;
      throw e;
    }
    const problems: string[] = [];
    let verified = 0;
    let folios = 0;
    let bytes = 0;
    let stamps = 0;
    for (const g of state.guests) {
      const what = `guest '${g.name}'`;
      const n = Number(g.folios);
      const area = g.runs ? this.vm.findVmArea(g.runs) : undefined;
      if (!(g.order >= 0 && g.order <= MAX_PAGE_ORDER) || !Number.isSafeInteger(n) || n < 1 || !area || area.size < g.nrRuns * 16 || g.stampEvery < 1) {
        problems.push(`${what}: the state is malformed (order ${g.order}, ${g.folios} folios, ${g.nrRuns} runs in ${area?.size ?? 0} bytes)`);
        if (area) this.vm.vfree(g.runs);
        continue;
      }
      const raw = this.vm.read(g.runs, g.nrRuns * 16);
      this.vm.vfree(g.runs);
      const view = new DataView(raw.buffer, raw.byteOffset, raw.length);
      const pfns = new Float64Array(n);
      const step = 2 ** g.order;
      let got = 0;
      let bad = 0;
      let firstBad = '';
      for (let r = 0; r < g.nrRuns && got < n; r++) {
        const first = Number(view.getBigUint64(r * 16, true));
        const count = Number(view.getBigUint64(r * 16 + 8, true));
        for (let k = 0; k < count && got < n; k++) {
          const phys = first + k * step * PAGE_SIZE;
          try {
            const f = this.kho.restoreFolio(toPhysAddr(phys, 'the folio'));
            pfns[got++] = f.pfn;
            if (f.order !== g.order) {
              bad++;
              firstBad ||= `folio ${hex(phys)} came back with order ${f.order} (wanted ${g.order})`;
            }
          } catch (e) {
            bad++;
            firstBad ||= `folio ${hex(phys)}: ${describeError(e, { errno: true })}`;
          }
        }
      }
      const h: Held = { name: g.name, order: toOrder(g.order), pfns: pfns.subarray(0, got) }; // range-checked above
      this.restored.push(h);
      folios += got;
      bytes += got * step * PAGE_SIZE;
      if (got !== n || bad > 0) {
        problems.push(`${what}: ${got - bad} of ${n} folios restored${firstBad ? `; ${bad} failed, first: ${firstBad}` : ''}`);
        continue;
      }
      // The sample's stamps, and nothing else written in the guest's memory.
      let stampBad = '';
      let sampled = 0;
      for (let i = 0; i < n; i += g.stampEvery) {
        sampled++;
        const want = stampOf(g.seed, i);
        const have = this.ram.read(pfns[i] * PAGE_SIZE, GUEST_STAMP_BYTES);
        if (!stampBad && Buffer.compare(have, want) !== 0) stampBad = `the stamp of folio ${i} at ${hex(pfns[i] * PAGE_SIZE)} differs`;
      }
      stamps += sampled;
      let written = 0;
      for (let r = 0; r < g.nrRuns; r++) {
        const first = Number(view.getBigUint64(r * 16, true)) / PAGE_SIZE;
        written += this.ram.populatedPagesIn(first, Number(view.getBigUint64(r * 16 + 8, true)) * step);
      }
      if (stampBad) problems.push(`${what}: ${stampBad}`);
      else if (written !== sampled) problems.push(`${what}: ${written} pages of its memory are written (wanted the ${sampled} stamped ones only)`);
      else verified++;
    }
    const check: GuestsCheck = { listed: state.guests.length, verified, folios, bytes, stamps, problems };
    this.lastRestore = check;
    this.log.info('scenario', `generation ${state.generation}'s guests: ${verified}/${state.guests.length} verified, ${folios} folios, ${stamps} stamps`);
    return { guests: `${verified}/${state.guests.length}`, folios, stamps, problems: problems.length };
  }

  /** Frees every restored folio. */
  finish(): PluginReport | void {
    let freed = 0;
    for (const h of this.restored) {
      for (let i = 0; i < h.pfns.length; i++) this.buddy.folioPut(new Folio(pfn(h.pfns[i]), h.order));
      freed += h.pfns.length;
    }
    this.restored = [];
    if (freed > 0) return { freedFolios: freed };
  }

  /** Unpreserves the first `count` folios prepare preserved (guests in order), the last first. */
  private unpreserveFirst(count: number): void {
    let g = 0;
    let left = count;
    while (g < this.held.length && left > this.held[g].pfns.length) left -= this.held[g++].pfns.length;
    for (; g >= 0; g--) {
      const h = this.held[g];
      if (!h) continue;
      for (let i = Math.min(left, h.pfns.length) - 1; i >= 0; i--) this.kho.unpreserveFolio(new Folio(pfn(h.pfns[i]), h.order));
      left = g > 0 ? this.held[g - 1].pfns.length : 0;
    }
    this.preserved = 0;
  }
}

/** Runs of consecutive folios (each `step` pages after the last), flattened: phys of the first, count, … */
function runsOf(pfns: Float64Array, step: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < pfns.length; ) {
    let j = i + 1;
    while (j < pfns.length && pfns[j] === pfns[j - 1] + step) j++;
    out.push(pfns[i] * PAGE_SIZE, j - i);
    i = j;
  }
  return out;
}

/** The kernel-image module of the guests, configured with what this boot's generation makes. */
export function guestMemoryModule(config: GuestMemoryConfig): KernelModule {
  return {
    name: 'scenario-guests',
    register(c: DependencyContainer) {
      c.register(GuestMemoryConfig, { useValue: config });
      registerPerBoot(c, GuestMemory, { plugin: true });
    },
  };
}
