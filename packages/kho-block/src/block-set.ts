import { Errno, KernelError, hex } from '@kho/kernel';
import { PAGE_SIZE, type PhysAddr, type PhysicalMemory } from '@kho/physmem';
import { KHO_BLOCK_ENTRY_BYTES, KHO_BLOCK_HEADER_SIZE, KHO_BLOCK_SIZE, KHO_MAX_BLOCKS, KhoBlockHeaderStruct, entriesPerBlock } from './abi';

/**
 * What a block set needs from KHO: preserved pages to write (outgoing) and a way to give back the pages the
 * previous kernel preserved (incoming). `Kho` provides the first three; {@link KhoBlocks} adapts it.
 */
export interface KhoBlockBackend {
  readonly ram: PhysicalMemory;
  /** A zeroed, preserved page (kho_alloc_preserve(4096)). Returns its phys; throws ENOMEM or the preserve error. */
  allocPreserve(size: number): PhysAddr;
  /** Undoes allocPreserve. */
  unpreserveFree(phys: PhysAddr): void;
  /** Takes back and frees a page the previous kernel preserved. Throws when it was not preserved. */
  restoreFree(phys: PhysAddr): void;
  /**
   * True when `phys` (any number: a pointer read from the previous kernel's RAM) is a page the previous kernel
   * preserved as an order-0 block and nobody restored yet; the check brands it.
   */
  isIncomingPage(phys: number): phys is PhysAddr;
}

const OFF_NEXT = KhoBlockHeaderStruct.offsetOf('next');
const OFF_COUNT = KhoBlockHeaderStruct.offsetOf('count');

/**
 * An ordered set of linked 4 KiB blocks of fixed-size entries (upstream `struct kho_block_set`). Outgoing sets
 * grow and shrink with the number of entries their owner may write (each block a preserved page, linked through
 * its header); an incoming set is restored from the previous kernel's chain after a cycle check and count checks,
 * and gives its pages back when destroyed or shrunk. The caller serialises access, as upstream.
 *
 * Entries are addressed by physical address: iterators return where an entry lies, the caller reads or writes it
 * with its own layout.
 */
export class KhoBlockSet {
  /** Entries one block holds: floor(4080 / entrySize). */
  readonly perBlock: number;
  private readonly blocks: PhysAddr[] = [];
  private incomingSet = false;

  /**
   * @param backend where blocks come from and go back to
   * @param entrySize bytes of one entry (1..4080); throws EINVAL otherwise (upstream WARNs and is unusable)
   * @param name what the set holds, for messages ("sessions", "files of session 'vm0'")
   */
  constructor(
    readonly backend: KhoBlockBackend,
    readonly entrySize: number,
    readonly name = 'kho_block set',
  ) {
    this.perBlock = entriesPerBlock(entrySize);
    if (this.perBlock === 0) {
      throw new KernelError(Errno.EINVAL, `${name}: entry size ${entrySize} does not fit a block (wanted 1..${KHO_BLOCK_ENTRY_BYTES} bytes)`);
    }
  }

  /** Blocks in the set. */
  get nblocks(): number {
    return this.blocks.length;
  }

  /** Phys of the first block, 0 when empty: what the owner hands over. */
  get headPa(): number {
    return this.blocks.length > 0 ? this.blocks[0] : 0;
  }

  /** Entries the set can hold now (nblocks × perBlock). */
  get capacity(): number {
    return this.blocks.length * this.perBlock;
  }

  /** True for a set restored from the previous kernel. */
  get incoming(): boolean {
    return this.incomingSet;
  }

  get isEmpty(): boolean {
    return this.blocks.length === 0;
  }

  /** The phys of every block, in chain order. */
  blockPhys(): readonly PhysAddr[] {
    return this.blocks;
  }

  /**
   * Makes room for `count` entries: appends preserved blocks (linking each from the previous one) until
   * capacity ≥ count. Throws EINVAL on an incoming set, ENOSPC past KHO_MAX_BLOCKS, or what allocation and
   * preservation throw (ENOMEM, ...); on failure the blocks this call added are removed again.
   */
  grow(count: number): void {
    if (this.incomingSet) throw new KernelError(Errno.EINVAL, `${this.name}: cannot grow a set restored from the previous kernel`);
    const orig = this.blocks.length;
    try {
      while (count > this.blocks.length * this.perBlock) {
        const phys = this.backend.allocPreserve(KHO_BLOCK_SIZE);
        if (this.blocks.length >= KHO_MAX_BLOCKS) {
          this.backend.unpreserveFree(phys);
          throw new KernelError(Errno.ENOSPC, `${this.name}: ${count} entries need more than ${KHO_MAX_BLOCKS} blocks of ${this.perBlock}`);
        }
        this.append(phys);
      }
    } catch (e) {
      while (this.blocks.length > orig) this.shrinkOne();
      throw e;
    }
  }

  /**
   * Drops trailing blocks not needed for `count` entries: while count ≤ (nblocks − 1) × perBlock the last block
   * goes (unpreserved and freed, or restored and freed for an incoming set) and the new last one ends the chain.
   */
  shrink(count: number): void {
    while (this.blocks.length > 0 && count <= (this.blocks.length - 1) * this.perBlock) this.shrinkOne();
  }

  /**
   * Takes over the previous kernel's chain starting at `headPa` (0: an empty set). Checks the chain for cycles
   * first (Floyd, at most KHO_MAX_BLOCKS steps of two blocks: a longer chain counts as corrupt), then walks it:
   * each block must be a page the previous kernel preserved and hold 1..perBlock entries, and there may be at
   * most KHO_MAX_BLOCKS. Throws EINVAL (cycle, bad pointer, bad count, page not preserved) or ENOSPC (too many
   * blocks), naming the block; after a cycle nothing is touched, after a later error every block of the chain
   * that was preserved is given back, as upstream.
   */
  restore(headPa: number): void {
    if (this.blocks.length > 0) throw new KernelError(Errno.EINVAL, `${this.name}: restore into a set that holds blocks`);
    this.incomingSet = true;
    if (headPa === 0) return;
    this.checkAcyclic(headPa);
    let next = headPa;
    let i = 0;
    try {
      for (; next !== 0; i++) {
        const at = `${this.name}: block ${i} at ${hex(next)}`;
        if (!this.backend.isIncomingPage(next)) throw new KernelError(Errno.EINVAL, `${at} is not a page the previous kernel preserved`);
        const count = this.readU64(next + OFF_COUNT);
        if (count === 0 || count > this.perBlock) {
          throw new KernelError(Errno.EINVAL, `${at} holds entry count ${describe(count)} (wanted 1..${this.perBlock})`);
        }
        if (this.blocks.length >= KHO_MAX_BLOCKS) throw new KernelError(Errno.ENOSPC, `${at} is one more than ${KHO_MAX_BLOCKS} blocks`);
        this.blocks.push(next);
        next = this.readU64(next + OFF_NEXT);
      }
    } catch (e) {
      this.destroy();
      // The rest of the chain is the previous kernel's memory too: give back what was preserved.
      for (let p = next; p !== 0; ) {
        const after = this.readU64(p + OFF_NEXT);
        if (this.backend.isIncomingPage(p)) this.backend.restoreFree(p);
        p = after;
      }
      throw e;
    }
  }

  /** Gives every block back (restored and freed when incoming, unpreserved and freed when outgoing); the set is empty. */
  destroy(): void {
    const all = this.blocks.splice(0);
    for (const phys of all) this.free(phys);
  }

  /** Sets every block's count to 0 and zeroes its entries; the blocks stay (upstream, after a failed freeze). */
  clear(): void {
    for (const phys of this.blocks) {
      this.backend.ram.writeU64(phys + OFF_COUNT, 0);
      this.backend.ram.fill(phys + KHO_BLOCK_HEADER_SIZE, KHO_BLOCK_ENTRY_BYTES, 0);
    }
  }

  /** A new iterator at the first entry of the first block. */
  iterator(): KhoBlockIterator {
    return new KhoBlockIterator(this, this.blocks);
  }

  /** Every entry's phys, read as the next kernel reads them (each block's count). */
  *entries(): Generator<number> {
    const it = this.iterator();
    for (let e = it.readEntry(); e !== undefined; e = it.readEntry()) yield e;
  }

  /** @internal the count in a block's header. */
  countOf(blockPhys: number): number {
    return this.readU64(blockPhys + OFF_COUNT);
  }

  /** @internal sets the count in a block's header. */
  setCount(blockPhys: number, count: number): void {
    this.backend.ram.writeU64(blockPhys + OFF_COUNT, count);
  }

  private append(phys: PhysAddr): void {
    const last = this.blocks[this.blocks.length - 1];
    this.blocks.push(phys);
    if (last !== undefined) this.backend.ram.writeU64(last + OFF_NEXT, phys);
  }

  private shrinkOne(): void {
    const last = this.blocks.pop();
    if (last === undefined) return;
    this.free(last);
    const newLast = this.blocks[this.blocks.length - 1];
    if (newLast !== undefined) this.backend.ram.writeU64(newLast + OFF_NEXT, 0);
  }

  private free(phys: PhysAddr): void {
    if (this.incomingSet) this.backend.restoreFree(phys);
    else this.backend.unpreserveFree(phys);
  }

  /**
   * Upstream's cycle check, step for step: the hare moves two blocks per step and the check gives up after
   * KHO_MAX_BLOCKS steps. Unlike upstream (which would fault), a pointer that is not a page of RAM is refused
   * before it is followed.
   */
  private checkAcyclic(headPa: number): void {
    const corrupt = (why: string): KernelError => new KernelError(Errno.EINVAL, `${this.name}: the block chain at ${describeAddr(headPa)} is corrupted: ${why}`);
    const follow = (from: number): number => {
      const n = this.readU64(from + OFF_NEXT);
      if (n !== 0) this.checkPointer(n, () => corrupt(`block at ${hex(from)} links to ${describe(n)}, not a page of RAM`));
      return n;
    };
    this.checkPointer(headPa, () => corrupt('the head is not a page of RAM'));
    let fast = headPa;
    let slow = headPa;
    let steps = 0;
    for (;;) {
      if (steps++ >= KHO_MAX_BLOCKS) throw corrupt(`it runs past ${2 * KHO_MAX_BLOCKS} blocks`);
      fast = follow(fast);
      if (fast === 0) return;
      fast = follow(fast);
      if (fast === 0) return;
      slow = this.readU64(slow + OFF_NEXT);
      if (slow === fast) throw corrupt(`it loops (block ${hex(fast)} is reached twice)`);
    }
  }

  private checkPointer(p: number, err: () => KernelError): void {
    if (!Number.isSafeInteger(p) || p % PAGE_SIZE !== 0 || !this.backend.ram.isRam(p, KHO_BLOCK_SIZE)) throw err();
  }

  private readU64(phys: number): number {
    const v = this.backend.ram.readU64(phys);
    return v >= 2 ** 53 ? Infinity : v;
  }
}

/** An address read from the previous kernel for a message: hex, or '>= 2^53' for what a u64 read gives as Infinity. */
function describeAddr(n: number): string {
  return Number.isSafeInteger(n) && n >= 0 ? hex(n) : '>= 2^53';
}

function describe(n: number): string {
  return Number.isFinite(n) ? (n >= 2 ** 16 ? hex(n) : String(n)) : '>= 2^53';
}

/**
 * A position in a block set (upstream `struct kho_block_set_it`): writers reserve entries in order, readers read
 * them back in order, `prev` steps back (undoing a reservation). Every method returns the phys of an entry, or
 * undefined at the end (or the start, for prev).
 */
export class KhoBlockIterator {
  private block: number;
  private i = 0;

  constructor(
    private readonly set: KhoBlockSet,
    private readonly blocks: readonly PhysAddr[],
  ) {
    this.block = blocks.length > 0 ? 0 : -1;
  }

  /**
   * The next free slot for writing: moves to the next block when this one is full, and sets the block's count to
   * the slots used. Undefined when the set's capacity is used up (the writer grew it too little).
   */
  reserveEntry(): number | undefined {
    if (this.block < 0) return undefined;
    if (this.i === this.set.perBlock) {
      if (this.block === this.blocks.length - 1) return undefined;
      this.block++;
      this.i = 0;
    }
    const phys = this.entryAt(this.i++);
    this.set.setCount(this.blocks[this.block], this.i);
    return phys;
  }

  /** The next entry written by the previous kernel (each block's count says how many it holds); undefined at the end. */
  readEntry(): number | undefined {
    if (this.block < 0) return undefined;
    if (this.i === this.set.countOf(this.blocks[this.block])) {
      if (this.block === this.blocks.length - 1) return undefined;
      this.block++;
      this.i = 0;
    }
    return this.entryAt(this.i++);
  }

  /** The previous slot, crossing back to the end of the previous block; undefined at the very start. */
  prev(): number | undefined {
    if (this.block < 0) return undefined;
    if (this.i === 0) {
      if (this.block === 0) return undefined;
      this.block--;
      this.i = this.set.perBlock;
    }
    return this.entryAt(--this.i);
  }

  private entryAt(index: number): number {
    return this.blocks[this.block] + KHO_BLOCK_HEADER_SIZE + index * this.set.entrySize;
  }
}
