import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { Errno, KernelError, crc32c, hex } from '@kho/kernel';
import {
  EI_CLASS,
  EI_DATA,
  EI_OSABI,
  EI_VERSION,
  ELF64_EHDR,
  ELF64_EHDR_SIZE,
  ELF64_NHDR,
  ELF64_NHDR_SIZE,
  ELF64_PHDR,
  ELF64_PHDR_SIZE,
  ELFCLASS64,
  ELFDATA2LSB,
  ELFMAG,
  ELFOSABI_NONE,
  EM_X86_64,
  ET_CORE,
  EV_CURRENT,
  IMAGE_PAGE_SIZE,
  IMAGE_SEGMENTS_HEAD,
  IMAGE_SEGMENTS_HEAD_SIZE,
  IMAGE_SEGMENT_ENTRY,
  IMAGE_SEGMENT_ENTRY_SIZE,
  KHO_DATA_SIZE,
  KHO_NOTE_NAME,
  NOTE_ALIGN,
  NT_KHO_DATA,
  NT_KHO_MACHINE,
  NT_KHO_SEGMENTS,
  PN_XNUM,
  PT_LOAD,
  PT_NOTE,
} from './abi';
import { getField, getField64 } from './fields';
import { HandoverImage, ImageMachine, ImageSegment, checkMachine, checkSegments, invalid } from './model';

/** The largest PT_NOTE accepted: the notes are read whole, and a real one is a few KiB. */
export const IMAGE_MAX_NOTE_SIZE = 16 << 20;

/**
 * The largest buffer the reader makes for segment bytes: a PT_LOAD longer than this (a machine with more than
 * 1 GiB of populated RAM in one run) comes back as several adjacent segments, so no buffer nears the limits of a
 * typed array or of one read call (2 GiB).
 */
export const IMAGE_SEGMENT_PIECE = 1 << 30;

/** The deepest nesting of arrays and objects accepted in the machine note (the project writes three). */
export const IMAGE_MAX_JSON_NESTING = 64;

/** Where `text` (JSON) first nests deeper than `limit` (the offset of the bracket), or -1. Linear, no recursion. */
function jsonTooDeep(text: string, limit: number): number {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return i;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return -1;
}

/** Bytes of segment data handed to {@link ReadImageOptions.onSegment} at a time. */
export const IMAGE_STREAM_PIECE = 64 << 20;

/** The largest read asked of the file system at once (a read call takes at most 2 GiB - 1). */
const READ_CHUNK = 1 << 30;

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

/**
 * Random access to an image's bytes (a file, a buffer): `size` bytes, of which `read` returns `length` from
 * `offset` as a buffer the reader may keep. The reader checks every range against `size` before it asks.
 */
export interface ImageSource {
  readonly size: number;
  read(offset: number, length: number): Uint8Array;
}

const truncated = (what: string, end: number, size: number): KernelError =>
  invalid(`truncated: ${what} ends at offset ${hex(end)} but the file has ${hex(size)} bytes (wanted the whole file)`);

/** Reads `length` bytes at `offset` after checking they are in the file; `what` names them in the message. */
function readIn(src: ImageSource, offset: number, length: number, what: string): Uint8Array {
  if (offset + length > src.size) throw truncated(what, offset + length, src.size);
  return src.read(offset, length);
}

function u64(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`${what} ${hex(v)} is too large (wanted below 2^53)`);
  return Number(v);
}

interface LoadHeader {
  index: number;
  offset: number;
  paddr: number;
  size: number;
  /** p_filesz as written (size is less when salvage kept only part of a cut segment). */
  whole: number;
}

/**
 * What a reader may accept of a damaged file instead of refusing it: `salvage` receives each problem (a PT_LOAD
 * cut short by the end of the file) and the image comes back with what the file still holds.
 */
export interface ReadImageOptions {
  readonly salvage?: (problem: string) => void;
  /**
   * Receives the segments' bytes as they are read, in address order and in pieces of at most
   * {@link IMAGE_STREAM_PIECE} bytes (adjacent pieces of one PT_LOAD follow each other); the image then comes back
   * with no segments, so a reader that copies each piece where it belongs never holds the file's data twice. A
   * piece's bytes may be reused once the call returns.
   */
  readonly onSegment?: (segment: ImageSegment) => void;
  /**
   * Called once every header and note has been checked, before any segment byte is read, with the image's
   * kho_data, machine and (still empty) segments: where a streaming reader builds what the pieces go into.
   */
  readonly onHeaders?: (image: HandoverImage) => void;
}

/**
 * Decodes a handover image from any random-access source, checking everything as {@link decodeImage} does;
 * segment bytes are read last, once every header has been checked, in pieces (see {@link ReadImageOptions}).
 * Returns the image; throws KernelError(EINVAL, 'image: …').
 */
export function readImage(src: ImageSource, opts: ReadImageOptions = {}): HandoverImage {
  // ELF header
  const eh = readIn(src, 0, ELF64_EHDR_SIZE, `the ${ELF64_EHDR_SIZE}-byte ELF header`);
  const ev = new DataView(eh.buffer, eh.byteOffset, eh.byteLength);
  const magic = eh.subarray(0, ELFMAG.length);
  if (!ELFMAG.every((b, i) => magic[i] === b)) {
    const bytes = (a: ArrayLike<number>): string => Array.from(a, (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw invalid(`bad ELF magic ${bytes(magic)} (wanted ${bytes(ELFMAG)})`);
  }
  const ident: Array<[number, number, string, string]> = [
    [EI_CLASS, ELFCLASS64, 'EI_CLASS', 'ELFCLASS64'],
    [EI_DATA, ELFDATA2LSB, 'EI_DATA', 'ELFDATA2LSB, little-endian'],
    [EI_VERSION, EV_CURRENT, 'EI_VERSION', 'EV_CURRENT'],
    [EI_OSABI, ELFOSABI_NONE, 'EI_OSABI', 'ELFOSABI_NONE'],
  ];
  for (const [at, want, name, meaning] of ident) {
    if (eh[at] !== want) throw invalid(`${name} is ${eh[at]} (wanted ${want}, ${meaning})`);
  }
  const field = (f: keyof typeof ELF64_EHDR): number => getField(ev, 0, ELF64_EHDR[f]);
  const checks: Array<[keyof typeof ELF64_EHDR, number, string]> = [
    ['e_type', ET_CORE, 'ET_CORE'],
    ['e_machine', EM_X86_64, 'EM_X86_64'],
    ['e_version', EV_CURRENT, 'EV_CURRENT'],
    ['e_ehsize', ELF64_EHDR_SIZE, 'the size of Elf64_Ehdr'],
    ['e_phentsize', ELF64_PHDR_SIZE, 'the size of Elf64_Phdr'],
  ];
  for (const [f, want, meaning] of checks) {
    if (field(f) !== want) throw invalid(`${f} is ${field(f)} (wanted ${want}, ${meaning})`);
  }
  const phnum = field('e_phnum');
  if (phnum === 0 || phnum === PN_XNUM) {
    throw invalid(`e_phnum is ${phnum} (wanted 1..${PN_XNUM - 1}: a PT_NOTE and the PT_LOADs)`);
  }
  const phoff = u64(getField64(ev, 0, ELF64_EHDR.e_phoff), 'e_phoff');
  if (phoff < ELF64_EHDR_SIZE) throw invalid(`e_phoff ${hex(phoff)} is inside the ELF header (wanted at least ${hex(ELF64_EHDR_SIZE)})`);

  // Program headers
  const ph = readIn(src, phoff, phnum * ELF64_PHDR_SIZE, `the program header table (${phnum} entries at ${hex(phoff)})`);
  const pv = new DataView(ph.buffer, ph.byteOffset, ph.byteLength);
  let note: { index: number; offset: number; size: number } | undefined;
  const loads: LoadHeader[] = [];
  for (let i = 0; i < phnum; i++) {
    const base = i * ELF64_PHDR_SIZE;
    const type = getField(pv, base, ELF64_PHDR.p_type);
    const big = (f: 'p_offset' | 'p_paddr' | 'p_filesz' | 'p_memsz'): number => u64(getField64(pv, base, ELF64_PHDR[f]), `program header ${i} ${f}`);
    if (type === PT_NOTE) {
      if (note) throw invalid(`program header ${i} is a second PT_NOTE (wanted exactly one, the first was ${note.index})`);
      note = { index: i, offset: big('p_offset'), size: big('p_filesz') };
    } else if (type === PT_LOAD) {
      const [offset, paddr, size, memsz] = [big('p_offset'), big('p_paddr'), big('p_filesz'), big('p_memsz')];
      if (size !== memsz) throw invalid(`PT_LOAD ${i} has p_filesz ${hex(size)} and p_memsz ${hex(memsz)} (wanted them equal)`);
      if (offset % IMAGE_PAGE_SIZE !== 0) throw invalid(`PT_LOAD ${i} p_offset ${hex(offset)} is not page aligned (wanted a multiple of ${IMAGE_PAGE_SIZE})`);
      loads.push({ index: i, offset, paddr, size, whole: size });
    } else {
      throw invalid(`program header ${i} has type ${hex(type)} (wanted PT_NOTE ${PT_NOTE} or PT_LOAD ${PT_LOAD})`);
    }
  }
  if (!note) throw invalid('no PT_NOTE program header (wanted exactly one)');

  // Notes
  if (note.size > IMAGE_MAX_NOTE_SIZE) throw invalid(`PT_NOTE of ${note.size} bytes is too large (wanted at most ${IMAGE_MAX_NOTE_SIZE})`);
  if (note.offset % NOTE_ALIGN !== 0) throw invalid(`PT_NOTE p_offset ${hex(note.offset)} is not 4-byte aligned (wanted a multiple of ${NOTE_ALIGN})`);
  const nb = readIn(src, note.offset, note.size, `the PT_NOTE (${note.size} bytes at ${hex(note.offset)})`);
  const nv = new DataView(nb.buffer, nb.byteOffset, nb.byteLength);
  let khoData: Uint8Array | undefined;
  let machineJson: Uint8Array | undefined;
  let sums: Uint8Array | undefined;
  for (let p = 0; p < nb.length; ) {
    const at = hex(note.offset + p);
    if (p + ELF64_NHDR_SIZE > nb.length) {
      throw invalid(`note at offset ${at} has ${nb.length - p} bytes left for its header (wanted ${ELF64_NHDR_SIZE}, inside the PT_NOTE)`);
    }
    const namesz = getField(nv, p, ELF64_NHDR.n_namesz);
    const descsz = getField(nv, p, ELF64_NHDR.n_descsz);
    const type = getField(nv, p, ELF64_NHDR.n_type);
    const nameAt = p + ELF64_NHDR_SIZE;
    const descAt = nameAt + align(namesz, NOTE_ALIGN);
    const end = descAt + align(descsz, NOTE_ALIGN);
    if (end > nb.length) {
      throw invalid(`note at offset ${at} (namesz ${namesz}, descsz ${descsz}) runs past the PT_NOTE (wanted it inside the ${nb.length} bytes)`);
    }
    const padding = [...nb.subarray(nameAt + namesz, descAt), ...nb.subarray(descAt + descsz, end)];
    if (padding.some((b) => b !== 0)) throw invalid(`note at offset ${at} has non-zero padding (wanted zeros)`);
    const name = nb.subarray(nameAt, nameAt + namesz);
    const isKho = namesz === KHO_NOTE_NAME.length + 1 && name[namesz - 1] === 0 && String.fromCharCode(...name.subarray(0, namesz - 1)) === KHO_NOTE_NAME;
    if (isKho) {
      const desc = nb.slice(descAt, descAt + descsz);
      if (type === NT_KHO_DATA) {
        if (khoData) throw invalid(`second kho_data note at offset ${at} (wanted exactly one)`);
        if (descsz !== KHO_DATA_SIZE) throw invalid(`kho_data note at offset ${at} has ${descsz} bytes (wanted ${KHO_DATA_SIZE})`);
        khoData = desc;
      } else if (type === NT_KHO_MACHINE) {
        if (machineJson) throw invalid(`second machine note at offset ${at} (wanted exactly one)`);
        machineJson = desc;
      } else if (type === NT_KHO_SEGMENTS) {
        if (sums) throw invalid(`second segments note at offset ${at} (wanted exactly one)`);
        sums = desc;
      } else {
        throw invalid(`KHO note at offset ${at} has unknown type ${hex(type)} (wanted ${hex(NT_KHO_DATA)}, ${hex(NT_KHO_MACHINE)} or ${hex(NT_KHO_SEGMENTS)})`);
      }
    } // notes of other owners are not ours to judge: skipped
    p = end;
  }
  if (!khoData) throw invalid(`no kho_data note (wanted exactly one, owner "KHO", type ${hex(NT_KHO_DATA)})`);
  if (!machineJson) throw invalid(`no machine note (wanted exactly one, owner "KHO", type ${hex(NT_KHO_MACHINE)})`);

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(machineJson);
  } catch (e) {
    throw invalid(`machine note is not UTF-8 JSON: ${(e as Error).message} (wanted {"pageSize":4096,"ram":[...]})`);
  }
  // Whatever reads the note's further keys later (a JSON report, a renderer) may recurse: refuse depth now.
  const deep = jsonTooDeep(text, IMAGE_MAX_JSON_NESTING);
  if (deep >= 0) {
    throw invalid(`machine note nests arrays and objects more than ${IMAGE_MAX_JSON_NESTING} levels deep (at character ${deep}; wanted at most ${IMAGE_MAX_JSON_NESTING})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw invalid(`machine note is not UTF-8 JSON: ${(e as Error).message} (wanted {"pageSize":4096,"ram":[...]})`);
  }
  const ram = checkMachine(parsed);
  const { pageSize, ram: ranges, ...extra } = parsed as ImageMachine;
  const machine: ImageMachine = { pageSize, ram: ranges.map(({ start, size, node }) => ({ start, size, node })), ...extra };

  // Segments: checked in address order, and their file ranges disjoint, so reading them costs at most the file.
  loads.sort((a, b) => a.paddr - b.paddr);
  checkSegments(loads, (i) => `PT_LOAD ${loads[i].index}`, ram);
  const byOffset = [...loads].sort((a, b) => a.offset - b.offset);
  byOffset.forEach((l, i) => {
    const end = l.offset + l.size;
    if (end > src.size) {
      const cut = truncated(`PT_LOAD ${l.index} (paddr ${hex(l.paddr)})`, end, src.size);
      if (!opts.salvage) throw cut;
      // keep the whole pages the file still holds; the rest of the segment is gone
      const kept = Math.max(0, Math.floor((src.size - l.offset) / IMAGE_PAGE_SIZE) * IMAGE_PAGE_SIZE);
      opts.salvage(`PT_LOAD ${l.index} (paddr ${hex(l.paddr)}) ends at offset ${hex(end)} but the file has ${hex(src.size)} bytes: ${kept} of its ${l.size} bytes kept (wanted the whole file)`);
      l.size = kept;
    }
    const prev = byOffset[i - 1];
    if (prev && l.offset < prev.offset + prev.size) {
      throw invalid(`PT_LOAD ${l.index} file bytes at ${hex(l.offset)} overlap those of PT_LOAD ${prev.index} (wanted disjoint file ranges)`);
    }
  });
  const wanted = checkSums(sums, khoData, machineJson, loads, opts.salvage);
  const segments: ImageSegment[] = [];
  opts.onHeaders?.({ khoData, machine, segments: [] });
  const piece = opts.onSegment ? IMAGE_STREAM_PIECE : IMAGE_SEGMENT_PIECE;
  loads.forEach((l, i) => {
    let crc = 0;
    for (let at = 0; at < l.size; at += piece) {
      const n = Math.min(piece, l.size - at);
      const seg = { paddr: l.paddr + at, bytes: src.read(l.offset + at, n) };
      if (wanted?.[i] !== undefined) crc = crc32c(seg.bytes, 0, seg.bytes.length, crc);
      if (opts.onSegment) opts.onSegment(seg);
      else segments.push(seg);
    }
    const want = wanted?.[i];
    if (want !== undefined && crc !== want) {
      const bad = `PT_LOAD ${l.index} (paddr ${hex(l.paddr)}): its bytes give crc32c ${hex(crc)} (wanted ${hex(want)}, as the segments note says)`;
      if (!opts.salvage) throw invalid(bad);
      opts.salvage(bad);
    }
  });
  return { khoData, machine, segments };
}

/**
 * Checks the NT_KHO_SEGMENTS note against the notes and the PT_LOADs (sorted by paddr): the notes' crc32c, and one
 * entry per PT_LOAD with its paddr and size. Returns the crc32c each PT_LOAD's bytes must give, or undefined when
 * salvaging an image that cannot be checked. Throws EINVAL naming the first difference, or when there is no note
 * (an image from a writer older than the note: its segments could have moved unnoticed).
 */
function checkSums(sums: Uint8Array | undefined, khoData: Uint8Array, machine: Uint8Array, loads: readonly LoadHeader[], salvage?: (problem: string) => void): Array<number | undefined> | undefined {
  const refuse = (why: string): undefined => {
    if (!salvage) throw invalid(why);
    salvage(`${why}: the segments are kept unchecked`);
    return undefined;
  };
  if (!sums) return refuse(`no segments note (owner "KHO", type ${hex(NT_KHO_SEGMENTS)}; wanted the checksums of every PT_LOAD, which writers before it did not write)`);
  const v = new DataView(sums.buffer, sums.byteOffset, sums.byteLength);
  const count = sums.length >= IMAGE_SEGMENTS_HEAD_SIZE ? getField(v, 0, IMAGE_SEGMENTS_HEAD.count) : -1;
  if (sums.length !== IMAGE_SEGMENTS_HEAD_SIZE + count * IMAGE_SEGMENT_ENTRY_SIZE) {
    return refuse(`segments note of ${sums.length} bytes does not hold ${count < 0 ? 'its header' : `${count} entries`} (wanted ${IMAGE_SEGMENTS_HEAD_SIZE} + ${IMAGE_SEGMENT_ENTRY_SIZE} bytes per PT_LOAD)`);
  }
  if (count !== loads.length) return refuse(`segments note lists ${count} segments but the file has ${loads.length} PT_LOADs (wanted one entry per PT_LOAD)`);
  const notes = crc32c(machine, 0, machine.length, crc32c(khoData));
  const noteWant = getField(v, 0, IMAGE_SEGMENTS_HEAD.notes_crc);
  if (notes !== noteWant) return refuse(`the kho_data and machine notes give crc32c ${hex(notes)} (wanted ${hex(noteWant)}, as the segments note says)`);
  const out: Array<number | undefined> = [];
  for (let i = 0; i < count; i++) {
    const at = IMAGE_SEGMENTS_HEAD_SIZE + i * IMAGE_SEGMENT_ENTRY_SIZE;
    const paddr = getField64(v, at, IMAGE_SEGMENT_ENTRY.paddr);
    const size = getField64(v, at, IMAGE_SEGMENT_ENTRY.size);
    const l = loads[i];
    if (paddr !== BigInt(l.paddr) || size !== BigInt(l.whole)) {
      return refuse(`PT_LOAD ${l.index} is [${hex(l.paddr)}, +${hex(l.whole)}) but entry ${i} of the segments note says [${hex(paddr)}, +${hex(size)}) (wanted the same)`);
    }
    // a segment salvage cut short cannot match; salvage has reported it already
    out.push(l.size === l.whole ? getField(v, at, IMAGE_SEGMENT_ENTRY.crc) : undefined);
  }
  return out;
}

/**
 * Decodes a handover image file held in memory. The input is hostile: ELF identification and header sizes,
 * every program header and note, the notes' sizes and padding, the machine description and every PT_LOAD
 * (page aligned, p_filesz = p_memsz, inside the file and inside RAM, disjoint) are checked.
 * Returns the image, its segments ascending and copied out of `bytes`.
 * Throws KernelError(EINVAL, 'image: <what> (wanted …)'); a cut-short file gives 'image: truncated: …'.
 */
export function decodeImage(bytes: Uint8Array, opts: ReadImageOptions = {}): HandoverImage {
  return readImage({ size: bytes.length, read: (offset, length) => bytes.slice(offset, offset + length) }, opts);
}

/**
 * Reads and decodes the handover image file at `path`, reading the headers first and then each segment, so
 * the file is never held twice. Returns the image (a PT_LOAD over {@link IMAGE_SEGMENT_PIECE} as several
 * segments). Throws what {@link decodeImage} throws, ENOENT when there is no such file, and EIO for any other
 * failure to read it. With `opts.salvage`, a file cut short comes back with the whole pages it still holds, each
 * loss reported to `salvage` (headers and notes must still be whole); with `opts.onSegment`, the segments' bytes
 * go to it as they are read instead of into the image.
 */
export function readImageFile(path: string, opts: ReadImageOptions = {}): HandoverImage {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code === 'ENOENT' ? Errno.ENOENT : Errno.EIO;
    throw new KernelError(errno, `image: cannot open ${path}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const size = fstatSync(fd).size;
    const read = (offset: number, length: number): Uint8Array => {
      const out = new Uint8Array(length);
      for (let done = 0; done < length; ) {
        const n = readSync(fd, out, done, Math.min(READ_CHUNK, length - done), offset + done);
        if (n === 0) throw new KernelError(Errno.EIO, `image: ${path} shrank while being read (at offset ${hex(offset + done)})`);
        done += n;
      }
      return out;
    };
    try {
      return readImage({ size, read }, opts);
    } catch (e) {
      if (e instanceof KernelError) throw e;
      throw new KernelError(Errno.EIO, `image: cannot read ${path}: ${(e as Error).message}`, { cause: e });
    }
  } finally {
    closeSync(fd);
  }
}
