import { hex } from '@kho/kernel';
import type { PhysicalMemory } from '@kho/physmem';
import { KA_V0_MAX_STARTPOS } from '../abi';
import type { KhoArray } from '../array';

/**
 * Malformed arrays for the reader's tests: each case starts from a valid array written by
 * {@link writeHostileBase}, changes a few bytes in RAM, and names the exact error the reader (read mode, or a
 * restore) must give. `pages` are the array's pages in chain order; `desc` is where its descriptor lies.
 */
export interface HostileCase {
  readonly name: string;
  readonly version: 0 | 1;
  corrupt(ram: PhysicalMemory, pages: readonly number[], desc: number): void;
  message(pages: readonly number[]): string;
}

/**
 * Version 0: entries at 1, 2, 600 and 1200, so pages at startpos 0, 510 and 1020. Version 1: 0..599, 1000,
 * 1001, 2^51 + 5 and 2^51 + 6, so page 0 is one block of 508 entries (0..507) and page 1 has block 0 (508..599,
 * header at byte 24), block 1 (1000, 1001: header at byte 768, entries at 776 and 784) and block 2 (absolute:
 * header at byte 792, position at 800, entries from 808, reserving the rest of the page: 411 slots).
 */
export const HOSTILE_POSITIONS: Readonly<Record<0 | 1, readonly (number | bigint)[]>> = {
  0: [1, 2, 600, 1200],
  1: [...Array.from({ length: 600 }, (_, i) => i), 1000, 1001, 2n ** 51n + 5n, 2n ** 51n + 6n],
};

/** Writes the base array of `a`'s version: value i at the i-th position. */
export function writeHostileBase(a: KhoArray): void {
  HOSTILE_POSITIONS[a.version].forEach((pos, i) => {
    a.seek(pos);
    a.setValue(i);
  });
}

const E = 'EINVAL: kho array: ';
const FAR = 2 ** 60;

export const HOSTILE_CASES: readonly HostileCase[] = [
  // ------------------------------------------------------------------ the descriptor
  {
    name: 'a bad magic',
    version: 1,
    corrupt: (ram, _p, desc) => ram.writeU32(desc, 0x4b415253),
    message: () => "EOPNOTSUPP: kho array: open: descriptor magic 0x4b415253 (wanted 0x4b415252, 'KARR')",
  },
  {
    name: 'a bad version',
    version: 0,
    corrupt: (ram, _p, desc) => ram.writeU16(desc + 4, 7),
    message: () => 'EOPNOTSUPP: kho array: open: descriptor version 7 (wanted 0 or 1)',
  },
  {
    name: 'reserved bits in the descriptor',
    version: 1,
    corrupt: (ram, _p, desc) => ram.writeU16(desc + 6, 0x8000),
    message: () => 'EINVAL: kho array: open: descriptor reserved field is 0x8000 (wanted 0)',
  },
  // ------------------------------------------------------------------ version 0
  {
    name: "v0: the descriptor's first page is outside RAM",
    version: 0,
    corrupt: (ram, _p, desc) => ram.writeU64(desc + 8, 2 ** 52),
    message: () => `${E}page 0x10000000000000 (the descriptor's first) is outside RAM`,
  },
  {
    name: 'v0: a next pointer is outside RAM',
    version: 0,
    corrupt: (ram, [p0]) => ram.writeU64(p0, FAR),
    message: ([p0]) => `${E}page 0x1000000000000000 (next of page ${hex(p0)}) is outside RAM`,
  },
  {
    name: 'v0: a next pointer is not page-aligned',
    version: 0,
    corrupt: (ram, [, p1, p2]) => ram.writeU64(p1, p2 + 16),
    message: ([, p1, p2]) => `${E}page ${hex(p2 + 16)} (next of page ${hex(p1)}) is not page-aligned`,
  },
  {
    name: 'v0: the chain has a cycle',
    version: 0,
    corrupt: (ram, [, p1, p2]) => ram.writeU64(p2, p1),
    message: ([, p1, p2]) => `${E}page ${hex(p1)} (next of page ${hex(p2)}) is reached twice (a cycle)`,
  },
  {
    name: 'v0: startpos is not a multiple of 510',
    version: 0,
    corrupt: (ram, [, p1]) => ram.writeU64(p1 + 8, 511),
    message: ([, p1]) => `${E}page ${hex(p1)}: startpos 511 is not a multiple of 510`,
  },
  {
    name: 'v0: positions do not increase',
    version: 0,
    corrupt: (ram, [, , p2]) => ram.writeU64(p2 + 8, 510),
    message: ([, , p2]) => `${E}page ${hex(p2)}: startpos 510 is not after position 1019, the end of the previous page (positions must increase)`,
  },
  {
    name: "v0: a page's slots pass position 2^64-1",
    version: 0,
    corrupt: (ram, [, , p2]) => ram.writeU64(p2 + 8, KA_V0_MAX_STARTPOS + 510n),
    message: ([, , p2]) => `${E}page ${hex(p2)}: startpos 18446744073709551360 leaves slots beyond position 2^64-1`,
  },
  {
    name: 'v0: an entry is neither a value nor an aligned pointer',
    version: 0,
    corrupt: (ram, [, p1]) => ram.writeU64(p1 + 16 + 90 * 8, 6),
    message: ([, p1]) => `${E}entry 0x6 at position 600 (page ${hex(p1)}) is neither a tagged value nor an 8-byte-aligned pointer`,
  },
  // ------------------------------------------------------------------ version 1
  {
    name: "v1: the descriptor's first page is not page-aligned",
    version: 1,
    corrupt: (ram, [p0], desc) => ram.writeU64(desc + 8, p0 + 1),
    message: ([p0]) => `${E}page ${hex(p0 + 1)} (the descriptor's first) is not page-aligned`,
  },
  {
    name: 'v1: a next pointer is outside RAM',
    version: 1,
    corrupt: (ram, [p0]) => ram.writeU64(p0, FAR),
    message: ([p0]) => `${E}page 0x1000000000000000 (next of page ${hex(p0)}) is outside RAM`,
  },
  {
    name: 'v1: a next pointer is not page-aligned',
    version: 1,
    corrupt: (ram, [p0, p1]) => ram.writeU64(p0, p1 + 8),
    message: ([p0, p1]) => `${E}page ${hex(p1 + 8)} (next of page ${hex(p0)}) is not page-aligned`,
  },
  {
    name: 'v1: the chain has a cycle',
    version: 1,
    corrupt: (ram, [p0, p1]) => ram.writeU64(p1, p0),
    message: ([p0, p1]) => `${E}page ${hex(p0)} (next of page ${hex(p1)}) is reached twice (a cycle)`,
  },
  {
    name: 'v1: the reserved field is not 0',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU32(p1 + 20, 1),
    message: ([, p1]) => `${E}page ${hex(p1)}: reserved field is 0x1 (wanted 0)`,
  },
  {
    name: 'v1: used is not a multiple of 8',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU16(p1 + 18, 4071),
    message: ([, p1]) => `${E}page ${hex(p1)}: used is 4071 bytes (wanted a multiple of 8 in 16..4072)`,
  },
  {
    name: 'v1: used is larger than the page',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU16(p1 + 18, 4080),
    message: ([, p1]) => `${E}page ${hex(p1)}: used is 4080 bytes (wanted a multiple of 8 in 16..4072)`,
  },
  {
    name: 'v1: nr_blocks is 0',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU16(p1 + 16, 0),
    message: ([, p1]) => `${E}page ${hex(p1)}: nr_blocks is 0 (wanted at least 1)`,
  },
  {
    name: "v1: a page's first block has the absolute flag",
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU8(p1 + 24, ram.readU8(p1 + 24) | 1),
    message: ([, p1]) => `${E}page ${hex(p1)}: block 0 has flags 1 and pos_increment 0 (wanted 0 and 0: it starts at first_pos)`,
  },
  {
    name: 'v1: positions do not increase from one page to the next',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU64(p1 + 8, 507),
    message: ([, p1]) => `${E}page ${hex(p1)}: first_pos 507 is not after position 507, the last of the previous page (positions must increase)`,
  },
  {
    name: 'v1: a block holds 0 entries',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU32(p1 + 768, 401 * 2 ** 14),
    message: ([, p1]) => `${E}page ${hex(p1)}: block 1 holds 0 entries (wanted 1..8191)`,
  },
  {
    name: "v1: num_entries overflows the page",
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU32(p1 + 24, 8191 * 2),
    message: ([, p1]) => `${E}page ${hex(p1)}: block 0 of 8191 entries at byte 24 ends at byte 65560, past the end of the used bytes (byte 4096)`,
  },
  {
    name: 'v1: nr_blocks is too large',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU16(p1 + 16, 4),
    message: ([, p1]) => `${E}page ${hex(p1)}: block 3 at byte 4096 does not fit before the end of the used bytes (byte 4096): nr_blocks 4 is too many`,
  },
  {
    name: 'v1: nr_blocks is too small',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU16(p1 + 16, 2),
    message: ([, p1]) => `${E}page ${hex(p1)}: block 1 is the last of 2 but ends at byte 792 (wanted byte 4096, the end of the used bytes)`,
  },
  {
    name: 'v1: pos_increment is 0',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU64(p1 + 768, 2 * 2),
    message: ([, p1]) => `${E}page ${hex(p1)}: block 1 has pos_increment 0 (wanted at least 1: positions must increase)`,
  },
  {
    name: 'v1: an absolute block also has a pos_increment',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU32(p1 + 792 + 4, 1),
    message: ([, p1]) => `${E}page ${hex(p1)}: block 2 has the absolute flag and pos_increment 262144 (wanted 0)`,
  },
  {
    name: 'v1: an absolute position does not increase',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU64(p1 + 800, 1001),
    message: ([, p1]) => `${E}page ${hex(p1)}: block 2 starts at absolute position 1001, not after position 1001 (positions must increase)`,
  },
  {
    name: 'v1: a block passes position 2^64-1',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU64(p1 + 800, 2n ** 64n - 2n),
    message: ([, p1]) => `${E}page ${hex(p1)}: block 2 of 411 entries at position 18446744073709551614 passes position 2^64-1`,
  },
  {
    name: 'v1: an entry is neither a value nor an aligned pointer',
    version: 1,
    corrupt: (ram, [, p1]) => ram.writeU64(p1 + 784, 4),
    message: ([, p1]) => `${E}entry 0x4 at position 1001 (page ${hex(p1)}) is neither a tagged value nor an 8-byte-aligned pointer`,
  },
];
