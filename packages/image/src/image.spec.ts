import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Errno, KernelError, crc32c, seededRandom } from '@kho/kernel';
import fc from 'fast-check';
import { ELF64_EHDR, ELF64_EHDR_SIZE, ELF64_NHDR, ELF64_NHDR_SIZE, ELF64_PHDR, ELF64_PHDR_SIZE, ElfField, NT_KHO_SEGMENTS } from './abi';
import { IMAGE_SEGMENT_PIECE, IMAGE_STREAM_PIECE, decodeImage, readImage, readImageFile } from './decode';
import { encodeImage, writeImageFile } from './encode';
import { HandoverImage, ImageMachine, pagesToSegments } from './model';

const READELF = '/usr/bin/readelf';
const haveReadelf = existsSync(READELF);
if (!haveReadelf) console.log(`${READELF} is absent: the readelf interoperability test is skipped`);
const itReadelf = haveReadelf ? it : it.skip;

const PAGE = 4096;
const MiB = 1 << 20;

/** A 32-byte kho_data: fdt_addr, fdt_size, scratch_addr, scratch_size. */
function khoData(fdt = 0x200000): Uint8Array {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  [fdt, PAGE, 0x800000, 48].forEach((x, i) => v.setBigUint64(i * 8, BigInt(x), true));
  return b;
}

/** `n` pages whose bytes depend on their address, so a misplaced page shows. */
function pages(paddr: number, n: number): Uint8Array {
  const b = new Uint8Array(n * PAGE);
  for (let i = 0; i < b.length; i += 8) b[i] = ((paddr + i) >>> 12) & 255;
  b[0] = 0xa5;
  return b;
}

const machine = (): ImageMachine => ({
  pageSize: PAGE,
  ram: [
    { start: 0, size: 16 * MiB, node: 0 },
    { start: 16 * MiB, size: 16 * MiB, node: 1 },
  ],
  cmdline: 'kho=on',
});

/** Three segments, the last crossing from node 0's range into node 1's. */
function sample(): HandoverImage {
  return {
    khoData: khoData(),
    machine: machine(),
    segments: [
      { paddr: 0x1000, bytes: pages(0x1000, 2) },
      { paddr: 0x100000, bytes: pages(0x100000, 1) },
      { paddr: 16 * MiB - PAGE, bytes: pages(16 * MiB - PAGE, 2) },
    ],
  };
}

const MACHINE_JSON =
  '{"pageSize":4096,"ram":[{"start":0,"size":16777216,"node":0},{"start":16777216,"size":16777216,"node":1}],"cmdline":"kho=on"}';

/** Byte equality without jest's element-by-element diffing, which is slow on pages. */
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
const u = (b: Uint8Array, base: number, f: ElfField): number =>
  f.size === 8 ? Number(view(b).getBigUint64(base + f.offset, true)) : f.size === 4 ? view(b).getUint32(base + f.offset, true) : view(b).getUint16(base + f.offset, true);
const phdr = (i: number): number => ELF64_EHDR_SIZE + i * ELF64_PHDR_SIZE;

/** `bytes` with a little-endian field of struct `base` set to `value`. */
function patched(bytes: Uint8Array, base: number, f: ElfField, value: number): Uint8Array {
  const b = bytes.slice();
  if (f.size === 8) view(b).setBigUint64(base + f.offset, BigInt(value), true);
  else if (f.size === 4) view(b).setUint32(base + f.offset, value, true);
  else view(b).setUint16(base + f.offset, value, true);
  return b;
}

/** Walks the notes of an image: where each note's descriptor lies, by type. */
function noteDescs(b: Uint8Array): Map<number, { at: number; size: number }> {
  const start = u(b, phdr(0), ELF64_PHDR.p_offset);
  const end = start + u(b, phdr(0), ELF64_PHDR.p_filesz);
  const out = new Map<number, { at: number; size: number }>();
  for (let p = start; p < end; ) {
    const namesz = u(b, p, ELF64_NHDR.n_namesz);
    const size = u(b, p, ELF64_NHDR.n_descsz);
    const at = p + ELF64_NHDR_SIZE + Math.ceil(namesz / 4) * 4;
    out.set(u(b, p, ELF64_NHDR.n_type), { at, size });
    p = at + Math.ceil(size / 4) * 4;
  }
  return out;
}

/** Rewrites the notes crc32c of the segments note after a test changed the kho_data or machine note on purpose. */
function resealNotes(b: Uint8Array): Uint8Array {
  const d = noteDescs(b);
  const kd = d.get(0x4b484f01)!;
  const m = d.get(0x4b484f02)!;
  view(b).setUint32(d.get(NT_KHO_SEGMENTS)!.at + 4, crc32c(b, m.at, m.at + m.size, crc32c(b, kd.at, kd.at + kd.size)), true);
  return b;
}

/**
 * The crc32c of `n` zero bytes continuing from `crc`, without touching n bytes: zero bytes act on the register
 * as a linear map, applied here by repeated squaring (as zlib's crc32_combine does).
 */
function crc32cZeros(crc: number, n: number): number {
  const apply = (m: Uint32Array, v: number): number => {
    let r = 0;
    for (let i = 0; v !== 0; i++, v >>>= 1) if (v & 1) r ^= m[i];
    return r >>> 0;
  };
  const square = (m: Uint32Array): Uint32Array => m.map((c) => apply(m, c));
  // one zero bit
  let op: Uint32Array = new Uint32Array(32);
  op[0] = 0x82f63b78;
  for (let i = 1; i < 32; i++) op[i] = 1 << (i - 1);
  op = square(square(square(op))); // one zero byte
  let reg = ~crc >>> 0;
  for (let k = n; k > 0; k = Math.floor(k / 2), op = square(op)) if (k % 2 === 1) reg = apply(op, reg);
  return ~reg >>> 0;
}

describe('image layout', () => {
  it('crc32cZeros (a helper of these tests) agrees with crc32c', () => {
    for (const n of [0, 1, 7, 4096, 12345]) expect(crc32cZeros(0x1234, n)).toBe(crc32c(new Uint8Array(n), 0, n, 0x1234));
  });

  it.each([
    ['Elf64_Ehdr', ELF64_EHDR, ELF64_EHDR_SIZE],
    ['Elf64_Phdr', ELF64_PHDR, ELF64_PHDR_SIZE],
    ['Elf64_Nhdr', ELF64_NHDR, ELF64_NHDR_SIZE],
  ])('%s fields are contiguous and sum to its size', (_name, struct, size) => {
    let next = 0;
    for (const f of Object.values(struct) as ElfField[]) {
      expect(f.offset).toBe(next);
      next += f.size;
    }
    expect(next).toBe(size);
  });
});

describe('encodeImage', () => {
  const file = encodeImage(sample());
  const notesAt = ELF64_EHDR_SIZE + 4 * ELF64_PHDR_SIZE;
  const machineNoteAt = notesAt + 12 + 4 + 32;
  const sumsNoteAt = machineNoteAt + 12 + 4 + Math.ceil(MACHINE_JSON.length / 4) * 4;
  /** The segments note of `n` PT_LOADs: header, name, 8-byte head and 24 bytes per PT_LOAD. */
  const sumsNoteSize = (n: number): number => 12 + 4 + 8 + 24 * n;
  const notesSize = sumsNoteAt - notesAt + sumsNoteSize(3);

  it('writes an ELF64 little-endian x86-64 core file header', () => {
    expect(Array.from(file.subarray(0, 16))).toEqual([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    expect(
      Object.fromEntries((Object.keys(ELF64_EHDR) as Array<keyof typeof ELF64_EHDR>).filter((k) => k !== 'e_ident').map((k) => [k, u(file, 0, ELF64_EHDR[k])])),
    ).toEqual({
      e_type: 4,
      e_machine: 62,
      e_version: 1,
      e_entry: 0,
      e_phoff: 64,
      e_shoff: 0,
      e_flags: 0,
      e_ehsize: 64,
      e_phentsize: 56,
      e_phnum: 4,
      e_shentsize: 0,
      e_shnum: 0,
      e_shstrndx: 0,
    });
  });

  it.each([
    [0, { p_type: 4, p_flags: 0, p_offset: notesAt, p_vaddr: 0, p_paddr: 0, p_filesz: notesSize, p_memsz: 0, p_align: 4 }],
    [1, { p_type: 1, p_flags: 7, p_offset: PAGE, p_vaddr: 0, p_paddr: 0x1000, p_filesz: 2 * PAGE, p_memsz: 2 * PAGE, p_align: PAGE }],
    [2, { p_type: 1, p_flags: 7, p_offset: 3 * PAGE, p_vaddr: 0, p_paddr: 0x100000, p_filesz: PAGE, p_memsz: PAGE, p_align: PAGE }],
    [3, { p_type: 1, p_flags: 7, p_offset: 4 * PAGE, p_vaddr: 0, p_paddr: 16 * MiB - PAGE, p_filesz: 2 * PAGE, p_memsz: 2 * PAGE, p_align: PAGE }],
  ])('program header %d', (i, fields) => {
    const got = Object.fromEntries((Object.keys(ELF64_PHDR) as Array<keyof typeof ELF64_PHDR>).map((k) => [k, u(file, phdr(i), ELF64_PHDR[k])]));
    expect(got).toEqual(fields);
  });

  it('writes the three KHO notes with 4-byte padding', () => {
    expect([u(file, notesAt, ELF64_NHDR.n_namesz), u(file, notesAt, ELF64_NHDR.n_descsz), u(file, notesAt, ELF64_NHDR.n_type)]).toEqual([4, 32, 0x4b484f01]);
    expect(Array.from(file.subarray(notesAt + 12, notesAt + 16))).toEqual([0x4b, 0x48, 0x4f, 0]);
    expect(Array.from(file.subarray(notesAt + 16, notesAt + 48))).toEqual(Array.from(khoData()));
    const m = machineNoteAt;
    expect([u(file, m, ELF64_NHDR.n_namesz), u(file, m, ELF64_NHDR.n_descsz), u(file, m, ELF64_NHDR.n_type)]).toEqual([4, MACHINE_JSON.length, 0x4b484f02]);
    expect(Buffer.from(file.subarray(m + 16, m + 16 + MACHINE_JSON.length)).toString('utf8')).toBe(MACHINE_JSON);
    expect(file.subarray(m + 16 + MACHINE_JSON.length, sumsNoteAt).every((b) => b === 0)).toBe(true);
    expect(file.subarray(notesAt + notesSize, PAGE).every((b) => b === 0)).toBe(true);
  });

  it('writes the segments note: the notes crc32c, then paddr, size and crc32c of each PT_LOAD', () => {
    const n = sumsNoteAt;
    expect([u(file, n, ELF64_NHDR.n_namesz), u(file, n, ELF64_NHDR.n_descsz), u(file, n, ELF64_NHDR.n_type)]).toEqual([4, 8 + 3 * 24, NT_KHO_SEGMENTS]);
    const d = n + 16;
    const notes = crc32c(Buffer.from(MACHINE_JSON), 0, MACHINE_JSON.length, crc32c(khoData()));
    expect([u(file, d, { offset: 0, size: 4 }), u(file, d, { offset: 4, size: 4 })]).toEqual([3, notes]);
    const want = sample().segments.map((sg) => [sg.paddr, sg.bytes.length, crc32c(sg.bytes), 0]);
    const fields = [{ offset: 0, size: 8 }, { offset: 8, size: 8 }, { offset: 16, size: 4 }, { offset: 20, size: 4 }];
    const got = [0, 1, 2].map((i) => fields.map((f) => u(file, d + 8 + i * 24, f)));
    expect(got).toEqual(want);
  });

  it('puts the segment bytes at their page-aligned offsets, and nothing after', () => {
    expect(file.length).toBe(6 * PAGE);
    expect(file.subarray(PAGE, 3 * PAGE)).toEqual(pages(0x1000, 2));
    expect(file.subarray(4 * PAGE)).toEqual(pages(16 * MiB - PAGE, 2));
  });

  it('ends after the notes when there are no segments', () => {
    const b = encodeImage({ ...sample(), segments: [] });
    expect(b.length).toBe(ELF64_EHDR_SIZE + ELF64_PHDR_SIZE + notesSize - sumsNoteSize(3) + sumsNoteSize(0));
    expect(decodeImage(b).segments).toEqual([]);
  });

  it.each<[string, (img: HandoverImage) => void, string]>([
    ['a 31-byte kho_data', (i) => (i.khoData = new Uint8Array(31)), 'kho_data is 31 bytes (wanted 32 bytes)'],
    ['a misaligned segment', (i) => (i.segments[1].paddr = 0x100800), 'segment 1 at paddr 1050624 is not page aligned (wanted a multiple of 4096)'],
    ['a segment of part of a page', (i) => (i.segments[1].bytes = new Uint8Array(100)), 'segment 1 is 100 bytes long (wanted a non-zero multiple of 4096)'],
    ['an empty segment', (i) => (i.segments[1].bytes = new Uint8Array(0)), 'segment 1 is 0 bytes long (wanted a non-zero multiple of 4096)'],
    ['overlapping segments', (i) => (i.segments[1].paddr = 0x2000), 'segment 1 at 0x2000 starts below the end 0x3000 of segment 0 (wanted ascending, disjoint segments)'],
    ['descending segments', (i) => i.segments.reverse(), 'segment 1 at 0x100000 starts below the end 0x1001000 of segment 0 (wanted ascending, disjoint segments)'],
    ['a segment beyond RAM', (i) => (i.segments[2].paddr = 32 * MiB - PAGE), 'segment 2 [0x1fff000, 0x2001000) is outside RAM (wanted inside a range of the machine\'s ram)'],
    ['a segment in a hole', (i) => (i.machine.ram = [{ start: 0, size: MiB, node: 0 }, { start: 2 * MiB, size: 30 * MiB, node: 0 }]), 'segment 1 [0x100000, 0x101000) is outside RAM'],
    ['a page size of 8192', (i) => (i.machine.pageSize = 8192), 'machine pageSize is 8192 (wanted 4096)'],
    ['ram that is not an array', (i) => ((i.machine as Record<string, unknown>).ram = 'all'), 'machine ram is "all" (wanted an array of {"start","size","node"})'],
    ['a misaligned ram range', (i) => (i.machine.ram[1].start = 16 * MiB + 1), 'machine ram[1].start 0x1000001 is not page aligned (wanted a multiple of 4096)'],
    ['an empty ram range', (i) => (i.machine.ram[1].size = 0), 'machine ram[1].size 0x0 is not a positive multiple of 4096'],
    ['a negative node', (i) => (i.machine.ram[1].node = -1), 'machine ram[1].node is -1 (wanted a non-negative integer)'],
    ['overlapping ram ranges', (i) => (i.machine.ram[1].start = 15 * MiB), 'machine ram ranges [0x0, 0x1000000) and [0xf00000, 0x1f00000) overlap (wanted disjoint ranges)'],
    ['a value JSON cannot hold', (i) => (i.machine.big = 1n), 'machine cannot be written as JSON: Do not know how to serialize a BigInt (wanted plain JSON values)'],
  ])('refuses %s with EINVAL', (_what, spoil, message) => {
    const img = sample();
    spoil(img);
    expect(() => encodeImage(img)).toThrow(new KernelError(Errno.EINVAL, `image: ${message}`).message);
  });
});

describe('image round trip', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'kho-image-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('decodeImage(encodeImage(x)) equals x, extra machine keys included', () => {
    expect(decodeImage(encodeImage(sample()))).toEqual(sample());
  });

  it('writeImageFile writes the bytes encodeImage builds, and readImageFile reads them back', () => {
    const path = join(dir, 'a.kho');
    writeImageFile(path, sample());
    expect(new Uint8Array(readFileSync(path))).toEqual(encodeImage(sample()));
    expect(readImageFile(path)).toEqual(sample());
  });

  it('writeImageFile validates before creating the file', () => {
    const path = join(dir, 'never.kho');
    expect(() => writeImageFile(path, { ...sample(), khoData: new Uint8Array(0) })).toThrow('EINVAL: image: kho_data is 0 bytes (wanted 32 bytes)');
    expect(existsSync(path)).toBe(false);
  });

  it.each([
    ['writeImageFile into a missing directory', () => writeImageFile(join('/nonexistent-kho', 'x'), sample()), Errno.EIO, /^EIO: image: cannot create \/nonexistent-kho\/x: /],
    ['readImageFile of a missing file', () => readImageFile('/nonexistent-kho/x'), Errno.ENOENT, /^ENOENT: image: cannot open \/nonexistent-kho\/x: /],
  ])('%s is a KernelError naming the file', (_what, fn, errno, message) => {
    let err: unknown;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).errno).toBe(errno);
    expect((err as KernelError).message).toMatch(message);
  });

  it('decoded segments are copies', () => {
    const bytes = encodeImage(sample());
    const img = decodeImage(bytes);
    bytes.fill(0);
    expect(img.segments[0].bytes).toEqual(pages(0x1000, 2));
  });

  it('a machine note with a "__proto__" key stays data', () => {
    const img = sample();
    Object.defineProperty(img.machine, '__proto__', { value: { polluted: true }, enumerable: true });
    const back = decodeImage(encodeImage(img));
    expect(Object.getPrototypeOf(back.machine)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('random page sets survive pagesToSegments, encode and decode (fast-check)', () => {
    const ramPages = (32 * MiB) / PAGE;
    fc.assert(
      fc.property(fc.uniqueArray(fc.nat({ max: ramPages - 1 }), { maxLength: 40 }), (pfns) => {
        const segments = pagesToSegments(pfns, (pfn) => pages(pfn * PAGE, 1));
        const img: HandoverImage = { khoData: khoData(pfns.length * PAGE), machine: machine(), segments };
        const back = decodeImage(encodeImage(img));
        expect(back.khoData).toEqual(img.khoData);
        expect(back.machine).toEqual(img.machine);
        expect(back.segments.map((x) => [x.paddr, x.bytes.length])).toEqual(img.segments.map((x) => [x.paddr, x.bytes.length]));
        back.segments.forEach((x, i) => expect(sameBytes(x.bytes, img.segments[i].bytes)).toBe(true));
        const sorted = [...pfns].sort((a, b) => a - b);
        const runs = sorted.filter((p, i) => i === 0 || sorted[i - 1] !== p - 1).length;
        expect(back.segments.length).toBe(runs);
        for (const pfn of pfns) {
          const s = back.segments.find((x) => x.paddr <= pfn * PAGE && pfn * PAGE < x.paddr + x.bytes.length)!;
          const off = pfn * PAGE - s.paddr;
          expect(sameBytes(s.bytes.subarray(off, off + PAGE), pages(pfn * PAGE, 1))).toBe(true);
        }
      }),
      { numRuns: 100 },
    );
  });

  itReadelf('readelf -l -n lists the segments and the notes cleanly', () => {
    const path = join(dir, 'readelf.kho');
    writeImageFile(path, sample());
    const r = spawnSync(READELF, ['-l', '-n', '-W', path], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Elf file type is CORE (Core file)');
    const loads = r.stdout.split('\n').filter((l) => /^\s+LOAD\s/.test(l));
    expect(loads.map((l) => l.trim().split(/\s+/).slice(1, 6))).toEqual([
      ['0x001000', '0x0000000000000000', '0x0000000000001000', '0x002000', '0x002000'],
      ['0x003000', '0x0000000000000000', '0x0000000000100000', '0x001000', '0x001000'],
      ['0x004000', '0x0000000000000000', '0x0000000000fff000', '0x002000', '0x002000'],
    ]);
    expect(r.stdout).toMatch(/NOTE\s+0x000120 /);
    expect(r.stdout).toMatch(/KHO\s+0x00000020\s+Unknown note type: \(0x4b484f01\)/);
    expect(r.stdout).toMatch(new RegExp(`KHO\\s+0x000000${MACHINE_JSON.length.toString(16)}\\s+Unknown note type: \\(0x4b484f02\\)`));
  });
});

describe('pagesToSegments', () => {
  it('merges consecutive pfns in any order into ascending runs and copies the pages', () => {
    const page = (fill: number): Uint8Array => new Uint8Array(PAGE).fill(fill);
    const segs = pagesToSegments([5, 1, 2, 7, 6], (pfn) => page(pfn));
    expect(segs.map((s) => [s.paddr, s.bytes.length])).toEqual([
      [1 * PAGE, 2 * PAGE],
      [5 * PAGE, 3 * PAGE],
    ]);
    expect(segs[1].bytes[2 * PAGE]).toBe(7);
    expect(pagesToSegments([], () => page(0))).toEqual([]);
  });

  it('splits a run longer than the largest segment into adjacent segments', () => {
    const segs = pagesToSegments([0, 1, 2, 3, 4, 9], (pfn) => new Uint8Array(PAGE).fill(pfn), 2 * PAGE);
    expect(segs.map((s) => [s.paddr / PAGE, s.bytes.length / PAGE, s.bytes[0]])).toEqual([
      [0, 2, 0],
      [2, 2, 2],
      [4, 1, 4],
      [9, 1, 9],
    ]);
  });

  it.each<[string, number[], (pfn: number) => Uint8Array, string]>([
    ['a duplicate pfn', [3, 1, 3], () => new Uint8Array(PAGE), 'pfn 0x3 is listed twice (wanted each page once)'],
    ['a negative pfn', [-1], () => new Uint8Array(PAGE), 'pfn -1 is not a page frame number (wanted an integer in 0..2^41-1)'],
    ['a fractional pfn', [1.5], () => new Uint8Array(PAGE), 'pfn 1.5 is not a page frame number (wanted an integer in 0..2^41-1)'],
    ['a short page', [1], () => new Uint8Array(100), 'page at pfn 0x1 has 100 bytes (wanted 4096)'],
  ])('refuses %s with EINVAL', (_what, pfns, bytes, message) => {
    expect(() => pagesToSegments(pfns, bytes)).toThrow(`EINVAL: image: ${message}`);
  });
});

describe('decodeImage refuses', () => {
  const good = encodeImage(sample());
  const NOTES = ELF64_EHDR_SIZE + 4 * ELF64_PHDR_SIZE; // 0x120

  /** An image whose machine note holds `json` (space-padded to the length of a placeholder). */
  function withMachineJson(json: string): Uint8Array {
    const img = { khoData: khoData(), machine: { ...machine(), pad: 'x'.repeat(300) }, segments: [] };
    const b = encodeImage(img);
    const desc = ELF64_EHDR_SIZE + ELF64_PHDR_SIZE + 48 + 16;
    const len = u(b, desc - 16, ELF64_NHDR.n_descsz);
    expect(json.length).toBeLessThanOrEqual(len);
    b.set(Buffer.from(json.padEnd(len, ' ')), desc);
    return b;
  }

  it('a file cut at any of 50 points, with "image: truncated"', () => {
    for (let i = 0; i < 50; i++) {
      const cut = Math.floor((i * good.length) / 50);
      expect(() => decodeImage(good.subarray(0, cut))).toThrow(/^EINVAL: image: truncated: .* ends at offset 0x[0-9a-f]+ but the file has 0x[0-9a-f]+ bytes \(wanted the whole file\)$/);
    }
    // and every cut inside the headers and notes, byte by byte
    for (let cut = 0; cut < NOTES + 200; cut++) {
      expect(() => decodeImage(good.subarray(0, cut))).toThrow('EINVAL: image: truncated: ');
    }
  });

  it.each<[string, () => Uint8Array, string]>([
    ['an empty file', () => new Uint8Array(0), 'truncated: the 64-byte ELF header ends at offset 0x40 but the file has 0x0 bytes (wanted the whole file)'],
    ['a cut inside the notes', () => good.subarray(0, NOTES + 10), `truncated: the PT_NOTE (${u(good, phdr(0), ELF64_PHDR.p_filesz)} bytes at 0x120) ends at offset 0x${(NOTES + u(good, phdr(0), ELF64_PHDR.p_filesz)).toString(16)} but the file has 0x12a bytes (wanted the whole file)`],
    ['a cut in the last page', () => good.subarray(0, good.length - 1), 'truncated: PT_LOAD 3 (paddr 0xfff000) ends at offset 0x6000 but the file has 0x5fff bytes (wanted the whole file)'],
    ['a corrupted magic', () => patched(good, 0, { offset: 1, size: 2 }, 0x4c44), 'bad ELF magic 7f 44 4c 46 (wanted 7f 45 4c 46)'],
    ['a 32-bit class', () => patched(good, 0, { offset: 4, size: 2 }, 0x0101), 'EI_CLASS is 1 (wanted 2, ELFCLASS64)'],
    ['big-endian data', () => patched(good, 0, { offset: 4, size: 2 }, 0x0202), 'EI_DATA is 2 (wanted 1, ELFDATA2LSB, little-endian)'],
    ['an OS ABI', () => patched(good, 0, { offset: 6, size: 2 }, 0x0301), 'EI_OSABI is 3 (wanted 0, ELFOSABI_NONE)'],
    ['an executable', () => patched(good, 0, ELF64_EHDR.e_type, 2), 'e_type is 2 (wanted 4, ET_CORE)'],
    ['an aarch64 file', () => patched(good, 0, ELF64_EHDR.e_machine, 183), 'e_machine is 183 (wanted 62, EM_X86_64)'],
    ['a wrong e_ehsize', () => patched(good, 0, ELF64_EHDR.e_ehsize, 52), 'e_ehsize is 52 (wanted 64, the size of Elf64_Ehdr)'],
    ['a wrong e_phentsize', () => patched(good, 0, ELF64_EHDR.e_phentsize, 32), 'e_phentsize is 32 (wanted 56, the size of Elf64_Phdr)'],
    ['no program headers', () => patched(good, 0, ELF64_EHDR.e_phnum, 0), 'e_phnum is 0 (wanted 1..65534: a PT_NOTE and the PT_LOADs)'],
    ['extended numbering', () => patched(good, 0, ELF64_EHDR.e_phnum, 0xffff), 'e_phnum is 65535 (wanted 1..65534: a PT_NOTE and the PT_LOADs)'],
    ['program headers past the file', () => patched(good, 0, ELF64_EHDR.e_phoff, good.length - 100), 'truncated: the program header table (4 entries at 0x5f9c) ends at offset 0x607c but the file has 0x6000 bytes (wanted the whole file)'],
    ['program headers inside the ELF header', () => patched(good, 0, ELF64_EHDR.e_phoff, 8), 'e_phoff 0x8 is inside the ELF header (wanted at least 0x40)'],
    ['an e_phoff beyond 2^53', () => patched(good, 0, ELF64_EHDR.e_phoff, 2 ** 60), 'e_phoff 0x1000000000000000 is too large (wanted below 2^53)'],
    ['an unknown program header', () => patched(good, phdr(2), ELF64_PHDR.p_type, 6), 'program header 2 has type 0x6 (wanted PT_NOTE 4 or PT_LOAD 1)'],
    ['a second PT_NOTE', () => patched(good, phdr(2), ELF64_PHDR.p_type, 4), 'program header 2 is a second PT_NOTE (wanted exactly one, the first was 0)'],
    ['a PT_NOTE turned PT_LOAD', () => patched(good, phdr(0), ELF64_PHDR.p_type, 1), `PT_LOAD 0 has p_filesz ${hexOf(u(good, phdr(0), ELF64_PHDR.p_filesz))} and p_memsz 0x0 (wanted them equal)`],
    ['no PT_NOTE', () => patched(patched(good, 0, ELF64_EHDR.e_phoff, phdr(1)), 0, ELF64_EHDR.e_phnum, 3), 'no PT_NOTE program header (wanted exactly one)'],
    ['a huge PT_NOTE', () => patched(good, phdr(0), ELF64_PHDR.p_filesz, 2 ** 30), 'PT_NOTE of 1073741824 bytes is too large (wanted at most 16777216)'],
    ['a misaligned PT_NOTE', () => patched(good, phdr(0), ELF64_PHDR.p_offset, 0x121), 'PT_NOTE p_offset 0x121 is not 4-byte aligned (wanted a multiple of 4)'],
    ['a note header cut by the PT_NOTE', () => patched(good, phdr(0), ELF64_PHDR.p_filesz, 56), 'note at offset 0x150 has 8 bytes left for its header (wanted 12, inside the PT_NOTE)'],
    ['a descsz past the PT_NOTE', () => patched(good, NOTES, ELF64_NHDR.n_descsz, 0x10000), `note at offset 0x120 (namesz 4, descsz 65536) runs past the PT_NOTE (wanted it inside the ${u(good, phdr(0), ELF64_PHDR.p_filesz)} bytes)`],
    ['a namesz past the PT_NOTE', () => patched(good, NOTES, ELF64_NHDR.n_namesz, 0xffffffff), `note at offset 0x120 (namesz 4294967295, descsz 32) runs past the PT_NOTE (wanted it inside the ${u(good, phdr(0), ELF64_PHDR.p_filesz)} bytes)`],
    ['a 28-byte kho_data', () => patched(good, NOTES, ELF64_NHDR.n_descsz, 28), 'kho_data note at offset 0x120 has 28 bytes (wanted 32)'],
    ['an unknown KHO note', () => patched(good, NOTES, ELF64_NHDR.n_type, 0x4b484f04), 'KHO note at offset 0x120 has unknown type 0x4b484f04 (wanted 0x4b484f01, 0x4b484f02 or 0x4b484f03)'],
    ['no kho_data note', () => patched(good, NOTES, { offset: 12, size: 4 }, 0x00504f4b), 'no kho_data note (wanted exactly one, owner "KHO", type 0x4b484f01)'],
    ['no machine note', () => patched(good, NOTES + 48, ELF64_NHDR.n_type, 0x4b484f01), 'second kho_data note at offset 0x150 (wanted exactly one)'],
    ['non-zero note padding', () => { const b = good.slice(); b[NOTES + 48 + 16 + MACHINE_JSON.length] = 1; return b; }, 'note at offset 0x150 has non-zero padding (wanted zeros)'],
    ['a page size of 8192', () => withMachineJson('{"pageSize":8192,"ram":[]}'), 'machine pageSize is 8192 (wanted 4096)'],
    ['a machine that is an array', () => withMachineJson('[]'), 'machine is [] (wanted an object {"pageSize":4096,"ram":[...]})'],
    ['ram holding a string', () => withMachineJson('{"pageSize":4096,"ram":["x"]}'), 'machine ram[0] is "x" (wanted {"start","size","node"})'],
    ['a ram size that is a string', () => withMachineJson('{"pageSize":4096,"ram":[{"start":0,"size":"4096","node":0}]}'), 'machine ram[0].size is "4096" (wanted a non-negative integer)'],
    ['a misaligned ram start', () => withMachineJson('{"pageSize":4096,"ram":[{"start":512,"size":4096,"node":0}]}'), 'machine ram[0].start 0x200 is not page aligned (wanted a multiple of 4096)'],
    ['a ram range ending beyond 2^53', () => withMachineJson('{"pageSize":4096,"ram":[{"start":9007199254740000,"size":4096,"node":0}]}'), 'machine ram[0].start 0x1ffffffffffc20 is not page aligned (wanted a multiple of 4096)'],
    ['a segment outside RAM', () => patched(good, phdr(3), ELF64_PHDR.p_paddr, 32 * MiB), "PT_LOAD 3 [0x2000000, 0x2002000) is outside RAM (wanted inside a range of the machine's ram)"],
    ['a misaligned segment', () => patched(good, phdr(2), ELF64_PHDR.p_paddr, 0x100010), 'PT_LOAD 2 at paddr 1048592 is not page aligned (wanted a multiple of 4096)'],
    ['overlapping segments', () => patched(good, phdr(2), ELF64_PHDR.p_paddr, 0x2000), 'PT_LOAD 2 at 0x2000 starts below the end 0x3000 of PT_LOAD 1 (wanted ascending, disjoint segments)'],
    ['a p_memsz unlike p_filesz', () => patched(good, phdr(2), ELF64_PHDR.p_memsz, 2 * PAGE), 'PT_LOAD 2 has p_filesz 0x1000 and p_memsz 0x2000 (wanted them equal)'],
    ['a part-page segment', () => patched(patched(good, phdr(2), ELF64_PHDR.p_memsz, 100), phdr(2), ELF64_PHDR.p_filesz, 100), 'PT_LOAD 2 is 100 bytes long (wanted a non-zero multiple of 4096)'],
    ['a misaligned file offset', () => patched(good, phdr(2), ELF64_PHDR.p_offset, 3 * PAGE + 8), 'PT_LOAD 2 p_offset 0x3008 is not page aligned (wanted a multiple of 4096)'],
    ['shared file bytes', () => patched(good, phdr(2), ELF64_PHDR.p_offset, PAGE), 'PT_LOAD 2 file bytes at 0x1000 overlap those of PT_LOAD 1 (wanted disjoint file ranges)'],
  ])('%s', (_what, bytes, message) => {
    expect(() => decodeImage(bytes())).toThrow(new KernelError(Errno.EINVAL, `image: ${message}`).message);
  });

  it('machine notes that are not JSON or not UTF-8', () => {
    expect(() => decodeImage(withMachineJson('{"pageSize":'))).toThrow(/^EINVAL: image: machine note is not UTF-8 JSON: .* \(wanted \{"pageSize":4096,"ram":\[\.\.\.\]\}\)$/);
    const b = withMachineJson('"x"');
    b[ELF64_EHDR_SIZE + ELF64_PHDR_SIZE + 48 + 16 + 1] = 0xff;
    expect(() => decodeImage(b)).toThrow(/^EINVAL: image: machine note is not UTF-8 JSON: /);
  });

  it.each([
    [63, true],
    [64, false],
    [100_000, false],
  ])('a machine note with an array %i levels deep inside it: accepted %s (issue 16, row 12: not a stack overflow)', (depth, ok) => {
    // a string key as long as the nesting, then its bytes replaced by the nesting: same length, same note size
    const filler = 'X'.repeat(2 * depth + 1);
    const b = encodeImage({ khoData: khoData(), machine: { ...machine(), deep: filler }, segments: [] });
    const at = Buffer.from(b).indexOf(`"${filler}"`);
    b.set(new TextEncoder().encode(`${'['.repeat(depth)}1${']'.repeat(depth)}  `), at);
    resealNotes(b);
    // the note is one object: the 64th bracket of the array is the 65th level
    const json = Buffer.from(b).indexOf('{"pageSize"');
    if (ok) expect(decodeImage(b).machine.deep).toHaveLength(1);
    else expect(() => decodeImage(b)).toThrow(`EINVAL: image: machine note nests arrays and objects more than 64 levels deep (at character ${at - json + 63}; wanted at most 64)`);
  });

  it('flipping random header and note bytes 2000 times gives an image or a KernelError(EINVAL)', () => {
    const small = encodeImage({ khoData: khoData(), machine: machine(), segments: [{ paddr: 0, bytes: pages(0, 1) }] });
    const headEnd = PAGE; // everything but the one page of data
    const rand = seededRandom(0x4b484f);
    let refused = 0;
    for (let i = 0; i < 2000; i++) {
      const b = small.slice();
      const flips = 1 + Math.floor(rand() * 3);
      for (let f = 0; f < flips; f++) b[Math.floor(rand() * headEnd * 0.1)] ^= 1 + Math.floor(rand() * 255);
      try {
        decodeImage(b);
      } catch (e) {
        if (!(e instanceof KernelError)) throw e;
        expect(e.errno).toBe(Errno.EINVAL);
        expect(e.message).toMatch(/^EINVAL: image: [^\n]*$/);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(1000);
  });
});

describe('the segments note (the fuzzer moved segment bytes through headers and notes with nothing noticing)', () => {
  const good = encodeImage(sample());
  const swapOffsets = (): Uint8Array => patched(patched(good, phdr(1), ELF64_PHDR.p_offset, 4 * PAGE), phdr(3), ELF64_PHDR.p_offset, PAGE);
  const refuse = (b: Uint8Array): string => {
    try {
      decodeImage(b);
    } catch (e) {
      if (e instanceof KernelError) return e.message;
      throw e;
    }
    return 'accepted';
  };

  it.each<[string, () => Uint8Array, string | RegExp]>([
    ['a PT_LOAD moved to another page of RAM', () => patched(good, phdr(2), ELF64_PHDR.p_paddr, 0x200000), 'PT_LOAD 2 is [0x200000, +0x1000) but entry 1 of the segments note says [0x100000, +0x1000) (wanted the same)'],
    ['two PT_LOADs that swapped their file bytes', swapOffsets, `PT_LOAD 1 (paddr 0x1000): its bytes give crc32c ${hexOf(crc32c(pages(16 * MiB - PAGE, 2)))} (wanted ${hexOf(crc32c(pages(0x1000, 2)))}, as the segments note says)`],
    ['a changed byte of a segment', () => { const b = good.slice(); b[3 * PAGE + 5] ^= 1; return b; }, /^EINVAL: image: PT_LOAD 2 \(paddr 0x100000\): its bytes give crc32c 0x[0-9a-f]+ \(wanted 0x[0-9a-f]+, as the segments note says\)$/],
    ['a changed machine note', () => { const b = good.slice(); b[Buffer.from(b).indexOf('kho=on') + 4] = 0x78; return b; }, /^EINVAL: image: the kho_data and machine notes give crc32c 0x[0-9a-f]+ \(wanted 0x[0-9a-f]+, as the segments note says\)$/],
    ['a changed kho_data note', () => { const b = good.slice(); b[ELF64_EHDR_SIZE + 4 * ELF64_PHDR_SIZE + 16] ^= 0x10; return b; }, /^EINVAL: image: the kho_data and machine notes give crc32c /],
    ['a segments note of another count', () => { const b = good.slice(); view(b).setUint32(noteDescs(b).get(NT_KHO_SEGMENTS)!.at, 2, true); return b; }, 'segments note of 80 bytes does not hold 2 entries (wanted 8 + 24 bytes per PT_LOAD)'],
    ['no segments note (a writer before it)', () => patched(good, noteDescs(good).get(NT_KHO_SEGMENTS)!.at - 16, { offset: 12, size: 4 }, 0x0058594e), 'no segments note (owner "KHO", type 0x4b484f03; wanted the checksums of every PT_LOAD, which writers before it did not write)'],
  ])('refuses %s before anything is used', (_what, bytes, message) => {
    const got = refuse(bytes());
    if (message instanceof RegExp) expect(got).toMatch(message);
    else expect(got).toBe(new KernelError(Errno.EINVAL, `image: ${message}`).message);
  });

  it('a streaming reader hears of a bad segment before readImage returns, once every segment has been read', () => {
    const seen: number[] = [];
    expect(() => readImage({ size: good.length, read: (o, n) => good.slice(o, o + n) }, { onSegment: (sg) => seen.push(sg.paddr) })).not.toThrow();
    const bad = swapOffsets();
    expect(() => readImage({ size: bad.length, read: (o, n) => bad.slice(o, o + n) }, { onSegment: () => undefined })).toThrow(/^EINVAL: image: PT_LOAD 1 \(paddr 0x1000\): its bytes give crc32c/);
  });

  it('salvage keeps an image with a bad checksum and reports it', () => {
    const problems: string[] = [];
    const img = decodeImage(swapOffsets(), { salvage: (p) => problems.push(p) });
    expect(img.segments).toHaveLength(3);
    expect(problems).toEqual([expect.stringMatching(/^PT_LOAD 1 \(paddr 0x1000\): its bytes give crc32c /), expect.stringMatching(/^PT_LOAD 3 \(paddr 0xfff000\): its bytes give crc32c /)]);
  });
});

describe('an interrupted write', () => {
  const ROOT = join(__dirname, '../../..');
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'kho-image-kill-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /**
   * A child process writes an 8 MiB image to `path` and is killed (SIGKILL, as by a crash) during its fourth
   * chunk: it stops itself there and tells the test, so the kill lands mid-write every time.
   */
  function killMidWrite(path: string): Promise<void> {
    const child = `
      const fs = require('node:fs');
      const write = fs.writeSync;
      let calls = 0;
      fs.writeSync = function (...args) {
        if (++calls === 4) { process.stdout.write('mid-write\\n'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000); }
        return write.apply(this, args);
      };
      const { writeImageFile } = require('@kho/image');
      const bytes = new Uint8Array(8 * 2 ** 20).fill(7);
      const kd = new Uint8Array(32);
      writeImageFile(process.argv[1], { khoData: kd, machine: { pageSize: 4096, ram: [{ start: 0, size: 2 ** 30, node: 0 }] }, segments: [{ paddr: 0, bytes }] });
    `;
    const register = require.resolve('@swc-node/register', { paths: [ROOT] });
    const proc = spawn(process.execPath, ['--conditions=@kho/source', '-r', register, '-e', child, path], {
      cwd: ROOT,
      env: { ...process.env, SWC_NODE_PROJECT: join(ROOT, 'tsconfig.base.json') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new Promise((done, fail) => {
      let out = '';
      let err = '';
      proc.stderr.on('data', (d) => (err += d));
      proc.stdout.on('data', (d) => {
        out += d;
        if (out.includes('mid-write')) proc.kill('SIGKILL');
      });
      proc.on('exit', (code, signal) => (signal === 'SIGKILL' ? done() : fail(new Error(`the writer ended with ${code ?? signal} before it was killed: ${err}`))));
    });
  }

  it('leaves no file when there was none, and the previous file when there was one, never a truncated one', async () => {
    const path = join(dir, 'image.kho');
    await killMidWrite(path);
    expect(existsSync(path)).toBe(false);

    writeImageFile(path, sample());
    const before = readFileSync(path);
    await killMidWrite(path);
    expect(readFileSync(path)).toEqual(before);
    expect(readImageFile(path)).toEqual(sample());
  }, 60_000);
});

describe('salvage of a file cut short', () => {
  it('keeps the whole pages the file still holds and reports each segment it cut', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kho-image-salvage-'));
    try {
      const path = join(dir, 'cut.kho');
      const bytes = encodeImage(sample());
      // the last segment is two pages: keep its first page and half of the second
      writeFileSync(path, bytes.subarray(0, bytes.length - PAGE / 2));
      expect(() => readImageFile(path)).toThrow(/^EINVAL: image: truncated: PT_LOAD 3 \(paddr 0xfff000\) ends at offset/);
      const lost: string[] = [];
      const img = readImageFile(path, { salvage: (p) => lost.push(p) });
      expect(lost).toEqual([`PT_LOAD 3 (paddr 0xfff000) ends at offset 0x6000 but the file has ${hexOf(bytes.length - PAGE / 2)} bytes: 4096 of its 8192 bytes kept (wanted the whole file)`]);
      expect(img.segments.map((s) => [s.paddr, s.bytes.length])).toEqual([
        [0x1000, 2 * PAGE],
        [0x100000, PAGE],
        [16 * MiB - PAGE, PAGE],
      ]);
      expect(img.segments[2].bytes).toEqual(pages(16 * MiB - PAGE, 2).subarray(0, PAGE));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a segment over 2 GiB (issue 16, row 10: the project read its own 2G image as "length out of range")', () => {
  it('is read in pieces: every byte where it belongs, no piece larger than IMAGE_STREAM_PIECE or IMAGE_SEGMENT_PIECE', () => {
    const size = 2 * 2 ** 30 + 2 * PAGE;
    const paddr = 0x100000;
    // a one-page image whose only PT_LOAD is grown to 2 GiB + 8 KiB: a file of zeros but for the headers and the two
    // pages at its ends, read through a source that serves its bytes without holding them
    const img: HandoverImage = { khoData: khoData(), machine: { pageSize: PAGE, ram: [{ start: 0, size: 4 * 2 ** 30, node: 0 }] }, segments: [{ paddr, bytes: pages(paddr, 1) }] };
    const small = encodeImage(img);
    const dataAt = small.length - PAGE;
    const head = patched(patched(small.subarray(0, dataAt), phdr(1), ELF64_PHDR.p_filesz, size), phdr(1), ELF64_PHDR.p_memsz, size);
    // the segments note says the same: entry 0's size and the crc32c of page, zeros, page
    const sums = noteDescs(head).get(NT_KHO_SEGMENTS)!.at;
    const last = pages(paddr + size - PAGE, 1);
    view(head).setBigUint64(sums + 8 + 8, BigInt(size), true);
    view(head).setUint32(sums + 8 + 16, crc32c(last, 0, PAGE, crc32cZeros(crc32c(pages(paddr, 1)), size - 2 * PAGE)), true);
    const ends: Array<[number, Uint8Array]> = [
      [0, head],
      [dataAt, pages(paddr, 1)],
      [dataAt + size - PAGE, pages(paddr + size - PAGE, 1)],
    ];
    const zeros = new Uint8Array(IMAGE_SEGMENT_PIECE);
    const asked: number[] = [];
    const source = {
      size: dataAt + size,
      read(offset: number, length: number): Uint8Array {
        asked.push(length);
        const out = ends.some(([at, b]) => at < offset + length && offset < at + b.length) ? new Uint8Array(length) : zeros.subarray(0, length);
        for (const [at, b] of ends) if (at < offset + length && offset < at + b.length) out.set(b.subarray(Math.max(0, offset - at), Math.min(b.length, offset + length - at)), Math.max(0, at - offset));
        return out;
      },
    };
    const check = (segs: Array<{ paddr: number; bytes: Uint8Array }>, piece: number): void => {
      expect(segs.every((s) => s.bytes.length <= piece)).toBe(true);
      expect(segs.reduce((n, s) => n + s.bytes.length, 0)).toBe(size);
      segs.forEach((s, i) => i > 0 && expect(s.paddr).toBe(segs[i - 1].paddr + segs[i - 1].bytes.length));
      expect(sameBytes(segs[0].bytes.subarray(0, PAGE), pages(paddr, 1))).toBe(true);
      const z = segs[segs.length - 1];
      expect(sameBytes(z.bytes.subarray(z.bytes.length - PAGE), pages(paddr + size - PAGE, 1))).toBe(true);
    };
    const streamed: Array<{ paddr: number; bytes: Uint8Array }> = [];
    expect(readImage(source, { onSegment: (s) => streamed.push(s) }).segments).toEqual([]);
    check(streamed, IMAGE_STREAM_PIECE);
    check(readImage(source).segments, IMAGE_SEGMENT_PIECE);
    expect(Math.max(...asked)).toBeLessThanOrEqual(IMAGE_SEGMENT_PIECE);
  });
});

function hexOf(n: number): string {
  return `0x${n.toString(16)}`;
}
