import { Errno, KernelError, seededRandom } from '@kho/kernel';
import fc from 'fast-check';
import { FDT_BEGIN_NODE as BEGIN, FDT_END as END, FDT_END_NODE as END_NODE, FDT_HEADER, FDT_NOP as NOP, FDT_PROP as PROP } from './abi';
import { decodeFdt } from './decode';
import { encodeFdt } from './encode';
import { FdtNode } from './node';

/** The golden KHO tree of encode.spec.ts; its layout is spelled out there. Offsets used below: */
const OFF = {
  struct: 0x38, // BEGIN_NODE of the root; its name at 0x3c
  compatible: 0x40, // FDT_PROP; len at 0x44, nameoff at 0x48, value at 0x4c
  map: 0x54, // FDT_PROP preserved-memory-map; nameoff at 0x5c
  child: 0x68, // BEGIN_NODE kho_test; name at 0x6c
  data: 0x78, // FDT_PROP preserved-data
  endChild: 0x8c,
  endRoot: 0x90,
  end: 0x94,
  strings: 0x98,
} as const;

function khoBlob(): Uint8Array {
  const root = new FdtNode().setString('compatible', 'kho-v2').setU64LE('preserved-memory-map', 0x1000);
  root.addChild('kho_test').setU64LE('preserved-data', 0x2000);
  return encodeFdt(root);
}

/** khoBlob() with `edit` applied to a DataView of it. */
function edited(edit: (v: DataView, b: Uint8Array) => void): Uint8Array {
  const b = khoBlob();
  edit(new DataView(b.buffer), b);
  return b;
}
const header = (field: keyof typeof FDT_HEADER, value: number) => edited((v) => v.setUint32(FDT_HEADER[field].offset, value));
const word = (at: number, value: number) => edited((v) => v.setUint32(at, value));

/**
 * A blob with a hand-written structure block: numbers are big-endian u32 words, strings are node names
 * (NUL-terminated, padded to 4). `strings` is the strings block verbatim.
 */
function raw(struct: Array<number | string>, strings = 'p\0', version = 17): Uint8Array {
  const words: number[] = [];
  for (const piece of struct) {
    if (typeof piece === 'number') {
      words.push(piece >>> 24, (piece >>> 16) & 255, (piece >>> 8) & 255, piece & 255);
    } else {
      const bytes = [...Array.from(piece, (c) => c.charCodeAt(0)), 0];
      while (bytes.length % 4) bytes.push(0);
      words.push(...bytes);
    }
  }
  const offStruct = 56;
  const offStrings = offStruct + words.length;
  const out = new Uint8Array(offStrings + strings.length);
  const v = new DataView(out.buffer);
  const fields: Array<[keyof typeof FDT_HEADER, number]> = [
    ['magic', 0xd00dfeed],
    ['totalsize', out.length],
    ['off_dt_struct', offStruct],
    ['off_dt_strings', offStrings],
    ['off_mem_rsvmap', 40],
    ['version', version],
    ['last_comp_version', 16],
    ['size_dt_strings', strings.length],
    ['size_dt_struct', version >= 17 ? words.length : 0],
  ];
  for (const [f, value] of fields) v.setUint32(FDT_HEADER[f].offset, value);
  out.set(words, offStruct);
  out.set(Array.from(strings, (c) => c.charCodeAt(0)), offStrings);
  return out;
}

describe('decodeFdt accepts', () => {
  it('NOPs between any two tokens', () => {
    const root = decodeFdt(raw([NOP, BEGIN, '', NOP, PROP, 1, 0, 0x2a000000, NOP, BEGIN, 'a', NOP, END_NODE, NOP, END_NODE, NOP, END]));
    expect(root.getProp('p')).toEqual(Uint8Array.from([0x2a]));
    expect(root.children.map((c) => c.name)).toEqual(['a']);
  });

  it('a version 16 blob, whose structure block size is not recorded', () => {
    const root = decodeFdt(raw([BEGIN, '', PROP, 0, 0, BEGIN, 'a', END_NODE, END_NODE, END], 'p\0', 16));
    expect(root.getProp('p')).toEqual(new Uint8Array());
    expect(root.child('a')).toBeDefined();
  });

  it('a blob inside a larger buffer, at a non-zero byteOffset', () => {
    const blob = khoBlob();
    const big = new Uint8Array(blob.length + 3);
    big.set(blob, 3);
    expect(decodeFdt(big.subarray(3)).child('kho_test')!.getU64LE('preserved-data')).toBe(0x2000n);
  });

  it('a tree exactly as deep and as large as the bounds', () => {
    const chain = raw([BEGIN, '', BEGIN, 'a', BEGIN, 'b', END_NODE, END_NODE, END_NODE, END]);
    expect(decodeFdt(chain, { maxDepth: 3, maxNodes: 3 }).child('a')!.child('b')).toBeDefined();
  });

  it('values that are copies, not views of the input', () => {
    const blob = khoBlob();
    const root = decodeFdt(blob);
    blob.fill(0);
    expect(root.getU64LE('preserved-memory-map')).toBe(0x1000n);
  });
});

describe('decodeFdt refuses', () => {
  it.each<[string, () => Uint8Array, string]>([
    ['a buffer shorter than the header', () => khoBlob().subarray(0, 39), 'buffer of 39 bytes is shorter than the header (at offset 0x0; wanted at least 40 bytes)'],
    ['a bad magic', () => header('magic', 0xd00dfeee), 'bad magic 0xd00dfeee (at offset 0x0; wanted 0xd00dfeed)'],
    ['version 15', () => header('version', 15), 'version 15 is too old (at offset 0x14; wanted at least 16)'],
    ['last_comp_version 18', () => header('last_comp_version', 18), 'last_comp_version 18 is newer than this reader (at offset 0x18; wanted at most 17)'],
    ['a totalsize below the header size', () => header('totalsize', 39), 'totalsize 39 is smaller than the header (at offset 0x4; wanted at least 40)'],
    ['a totalsize beyond the buffer', () => header('totalsize', 200), 'totalsize 200 exceeds the buffer of 199 bytes (at offset 0x4; wanted at most 199)'],
    ['a truncated buffer', () => khoBlob().subarray(0, 198), 'totalsize 199 exceeds the buffer of 198 bytes (at offset 0x4; wanted at most 198)'],
    ['a misaligned reservation block', () => header('off_mem_rsvmap', 0x2c), 'off_mem_rsvmap 0x2c is misplaced (at offset 0x10; wanted an 8-aligned offset in 0x28..0xb7)'],
    ['a reservation block inside the header', () => header('off_mem_rsvmap', 0x20), 'off_mem_rsvmap 0x20 is misplaced (at offset 0x10; wanted an 8-aligned offset in 0x28..0xb7)'],
    ['a reservation block past totalsize', () => header('off_mem_rsvmap', 0xb8), 'off_mem_rsvmap 0xb8 is misplaced (at offset 0x10; wanted an 8-aligned offset in 0x28..0xb7)'],
    ['a memory reservation', () => edited((_v, b) => (b[0x28 + 15] = 1)), 'memory reservation entry 0 is not empty (at offset 0x28; wanted an empty reservation map (KHO reserves nothing there))'],
    ['a misaligned structure block', () => header('off_dt_struct', 0x3a), 'off_dt_struct 0x3a is misplaced (at offset 0x8; wanted a 4-aligned offset in 0x28..0xc7)'],
    ['a structure block past totalsize', () => header('off_dt_struct', 0xc8), 'off_dt_struct 0xc8 is misplaced (at offset 0x8; wanted a 4-aligned offset in 0x28..0xc7)'],
    ['a structure block size past totalsize', () => header('size_dt_struct', 144), 'size_dt_struct 144 does not fit (at offset 0x24; wanted a multiple of 4 of at most 143)'],
    ['a structure block size not a multiple of 4', () => header('size_dt_struct', 94), 'size_dt_struct 94 does not fit (at offset 0x24; wanted a multiple of 4 of at most 143)'],
    ['a strings block inside the header', () => header('off_dt_strings', 0x10), 'off_dt_strings 0x10 is misplaced (at offset 0xc; wanted an offset in 0x28..0xc7)'],
    ['a strings block past totalsize', () => header('off_dt_strings', 0xc8), 'off_dt_strings 0xc8 is misplaced (at offset 0xc; wanted an offset in 0x28..0xc7)'],
    ['a strings block size past totalsize', () => header('size_dt_strings', 48), 'size_dt_strings 48 does not fit (at offset 0x20; wanted at most 47)'],
    ['an unknown token', () => word(OFF.map, 5), 'unknown token 0x5 (at offset 0x54; wanted FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP or FDT_END)'],
    ['an END_NODE first', () => word(OFF.struct, END_NODE), 'FDT_END_NODE without an open node (at offset 0x38; wanted FDT_BEGIN_NODE first)'],
    ['an END first', () => raw([END]), 'FDT_END before the root node (at offset 0x38; wanted FDT_BEGIN_NODE first)'],
    ['a property outside any node', () => raw([PROP, 0, 0, BEGIN, '', END_NODE, END]), 'property outside any node (at offset 0x38; wanted properties inside a node)'],
    ['a property header past the block', () => raw([BEGIN, '', PROP, 0]), 'property header runs past the structure block (at offset 0x40; wanted 8 bytes after FDT_PROP)'],
    ['a property value past the block', () => word(OFF.compatible + 4, 0x1000), 'property value of 4096 bytes runs past the structure block (at offset 0x40; wanted at most 76 bytes)'],
    ['a name offset past the strings block', () => word(OFF.compatible + 8, 47), 'property name offset 0x2f is outside the strings block (at offset 0x40; wanted below size_dt_strings 0x2f)'],
    ['a name that is not NUL-terminated in the strings block', () => header('size_dt_strings', 46), 'property name at strings offset 0x20 is not NUL-terminated within 32 bytes of the strings block (at offset 0x78; wanted a NUL-terminated name)'],
    ['a name longer than 31 characters', () => raw([BEGIN, '', PROP, 0, 0, END_NODE, END], `${'p'.repeat(32)}\0`), 'property name at strings offset 0x0 is not NUL-terminated within 32 bytes of the strings block (at offset 0x40; wanted a NUL-terminated name)'],
    ['an empty property name', () => word(OFF.compatible + 8, 10), 'property name "" in / is not valid (at offset 0x40; wanted 1..31 characters of A-Z a-z 0-9 , . _ + ? # -)'],
    ['a duplicate property', () => word(OFF.map + 8, 0), 'duplicate property "compatible" in / (at offset 0x54; wanted unique property names)'],
    ['a property after a child node', () => raw([BEGIN, '', BEGIN, 'a', END_NODE, PROP, 0, 0, END_NODE, END]), 'property "p" after a child node of / (at offset 0x4c; wanted properties before subnodes)'],
    ['a named root', () => edited((_v, b) => (b[0x3c] = 0x61)), 'root node is named "a" (at offset 0x3c; wanted an empty name)'],
    ['an invalid node name', () => edited((_v, b) => (b[0x6c] = 0x2a)), 'node name "*ho_test" is not valid (at offset 0x6c; wanted 1..31 characters of A-Z a-z 0-9 , . _ + - and an optional @unit)'],
    ['a node name without NUL', () => raw([BEGIN, '', BEGIN, 0x61616161]), 'node name is not NUL-terminated within 63 bytes of the structure block (at offset 0x44; wanted a NUL-terminated name)'],
    ['a duplicate node', () => raw([BEGIN, '', BEGIN, 'a', END_NODE, BEGIN, 'a', END_NODE, END_NODE, END]), 'duplicate node /a (at offset 0x4c; wanted unique node names)'],
    ['a second root', () => raw([BEGIN, '', END_NODE, BEGIN, '', END_NODE, END]), 'a second root node (at offset 0x44; wanted FDT_END after the root node)'],
    ['an unclosed node', () => word(OFF.endRoot, NOP), 'FDT_END inside node / (at offset 0x94; wanted FDT_END_NODE first)'],
    ['an extra END_NODE', () => word(OFF.end, END_NODE), 'FDT_END_NODE without an open node (at offset 0x94; wanted FDT_BEGIN_NODE first)'],
    ['a missing END', () => word(OFF.end, NOP), 'structure block ends before FDT_END (at offset 0x98; wanted an FDT_END token)'],
    ['tokens after END', () => raw([BEGIN, '', END_NODE, END, NOP]), 'FDT_END is not the last token (at offset 0x44; wanted the structure block to end at 0x4c)'],
  ])('%s', (_what, blob, message) => {
    expect(() => decodeFdt(blob())).toThrow(new KernelError(Errno.EINVAL, `FDT: ${message}`));
  });

  it.each<[string, Array<number | string>, { maxDepth?: number; maxNodes?: number }, string]>([
    ['nesting deeper than maxDepth', [BEGIN, '', BEGIN, 'a', BEGIN, 'b', END_NODE, END_NODE, END_NODE, END], { maxDepth: 2 }, 'node /a/b is nested deeper than 2 levels (at offset 0x48; wanted at most 2 levels)'],
    ['more nodes than maxNodes', [BEGIN, '', BEGIN, 'a', END_NODE, BEGIN, 'b', END_NODE, END_NODE, END], { maxNodes: 2 }, 'more than 2 nodes (at offset 0x4c; wanted at most 2 nodes)'],
  ])('%s', (_what, struct, opts, message) => {
    expect(() => decodeFdt(raw(struct), opts)).toThrow(`EINVAL: FDT: ${message}`);
  });

  it('nesting deeper than 32 levels by default', () => {
    const struct: Array<number | string> = [BEGIN, ''];
    for (let i = 0; i < 32; i++) struct.push(BEGIN, 'n');
    expect(() => decodeFdt(raw(struct))).toThrow(`EINVAL: FDT: node ${'/n'.repeat(32)} is nested deeper than 32 levels`);
  });

  it.each([
    [{ maxDepth: 0 }, 'EINVAL: FDT: maxDepth 0 is not a positive integer'],
    [{ maxNodes: 1.5 }, 'EINVAL: FDT: maxNodes 1.5 is not a positive integer'],
  ])('options %j', (opts, message) => {
    expect(() => decodeFdt(khoBlob(), opts)).toThrow(message);
  });
});

describe('decodeFdt on corrupted input', () => {
  /** Decodes and returns 'ok' or the error; fails the test on anything but a tree or a KernelError. */
  function outcome(blob: Uint8Array): 'ok' | 'refused' {
    try {
      decodeFdt(blob);
      return 'ok';
    } catch (e) {
      if (!(e instanceof KernelError)) throw e;
      expect(e.errno).toBe(Errno.EINVAL);
      expect(e.message).toMatch(/^EINVAL: FDT: .* \(at offset 0x[0-9a-f]+; wanted .*\)$/);
      return 'refused';
    }
  }

  function fuzzTree(): Uint8Array {
    const root = new FdtNode().setString('compatible', 'kho-v2').setU64LE('preserved-memory-map', 0x1000);
    for (const name of ['kho_test', 'memblock', 'kstate@1']) {
      const n = root.addChild(name).setU64LE('preserved-data', 0x2000).setString('compatible', 'x');
      n.addChild('leaf').setProp('bytes', new Uint8Array([1, 2, 3]));
    }
    return encodeFdt(root);
  }

  it('flipping random bytes 2000 times gives a tree or a KernelError, never anything else', () => {
    const rand = seededRandom(0x6b686f);
    const base = fuzzTree();
    const seen = { ok: 0, refused: 0 };
    for (let i = 0; i < 2000; i++) {
      const blob = base.slice();
      const flips = 1 + Math.floor(rand() * 4);
      for (let f = 0; f < flips; f++) blob[Math.floor(rand() * blob.length)] ^= 1 + Math.floor(rand() * 255);
      seen[outcome(blob)]++;
    }
    expect(seen.refused).toBeGreaterThan(500); // the fuzz reaches the checks, not just the values
    expect(seen.ok).toBeGreaterThan(0);
  });

  it('random words spliced into the structure block, and truncations, are handled (fast-check)', () => {
    const base = fuzzTree();
    const structStart = 0x38;
    fc.assert(
      fc.property(
        fc.nat({ max: base.length - structStart - 4 }),
        fc.array(fc.oneof(fc.constantFrom(BEGIN, END_NODE, PROP, NOP, END, 0xffffffff), fc.nat()), { maxLength: 6 }),
        fc.nat({ max: base.length }),
        (at, words, cut) => {
          const blob = base.slice();
          const v = new DataView(blob.buffer);
          words.forEach((w, i) => {
            const p = structStart + ((at + i * 4) & ~3);
            if (p + 4 <= blob.length) v.setUint32(p, w >>> 0);
          });
          outcome(blob);
          outcome(blob.subarray(0, cut));
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('a structure block of 100,000 NOPs ends', () => {
    const struct: number[] = new Array(100_000).fill(NOP);
    expect(() => decodeFdt(raw(struct))).toThrow('EINVAL: FDT: structure block ends before FDT_END');
  });
});
