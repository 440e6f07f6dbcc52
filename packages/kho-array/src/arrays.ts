import { injectable } from 'tsyringe';
import { BuddyAllocator, Memmap, PhysicalMemory } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KHO_ARRAY_DEFAULT_VERSION } from './abi';
import { createKhoArray, openKhoArray, type KhoArray, type KhoArrayContext, type KhoArrayMode } from './array';

/**
 * This boot's KHO arrays: makes new arrays whose pages come from the buddy allocator and opens arrays from their
 * descriptors, with KHO for preserve and restore. One instance per boot (see {@link khoArrayModule}).
 */
@injectable()
export class KhoArrays {
  private readonly ctx: KhoArrayContext;

  constructor(ram: PhysicalMemory, memmap: Memmap, buddy: BuddyAllocator, kho: Kho) {
    this.ctx = { ram, memmap, buddy, kho };
  }

  /** A new, empty array of `version` (default 1) in write mode. Throws EOPNOTSUPP for a version other than 0 and 1. */
  create(version: number = KHO_ARRAY_DEFAULT_VERSION): KhoArray {
    return createKhoArray(this.ctx, version);
  }

  /**
   * The array described by `desc` (its 16 bytes, or their phys) in `mode` (default read). See
   * {@link openKhoArray} for the checks each mode makes and the errors (EINVAL, EOPNOTSUPP).
   */
  open(desc: number | Uint8Array, mode: KhoArrayMode = 'read'): KhoArray {
    return openKhoArray(this.ctx, desc, mode);
  }

  /**
   * In the next kernel: checks the whole array described by `desc`, restores every page, and returns it in
   * restore mode (it reads; `destroy` frees the pages). Same as `open(desc, 'restore')`.
   */
  restore(desc: number | Uint8Array): KhoArray {
    return openKhoArray(this.ctx, desc, 'restore');
  }
}
