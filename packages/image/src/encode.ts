import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Errno, KernelError, crc32c } from '@kho/kernel';
import {
  EI_ABIVERSION,
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
  IMAGE_LOAD_FLAGS,
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
import { putField } from './fields';
import { HandoverImage, ImageSegment, checkMachine, checkSegments, invalid, show } from './model';

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Bytes of a segment written per writeSync call: big enough to be fast, small enough to be interruptible. */
const WRITE_CHUNK = 1 << 20;

/** Everything before the first segment, and where each segment goes in the file. */
interface ImagePlan {
  head: Uint8Array;
  segments: ImageSegment[];
  offsets: number[];
  size: number;
}

/** The note of owner "KHO" with descriptor `desc`, padded as ELF notes are. */
function noteSize(desc: Uint8Array): number {
  return ELF64_NHDR_SIZE + align(KHO_NOTE_NAME.length + 1, NOTE_ALIGN) + align(desc.length, NOTE_ALIGN);
}

/**
 * The NT_KHO_SEGMENTS descriptor: the crc32c of the two other notes' descriptors and, per segment, where it goes,
 * how long it is and the crc32c of its bytes, so a reader notices a changed header, note or byte before use.
 */
export function segmentsNote(khoData: Uint8Array, machine: Uint8Array, segments: readonly ImageSegment[]): Uint8Array {
  const desc = new Uint8Array(IMAGE_SEGMENTS_HEAD_SIZE + segments.length * IMAGE_SEGMENT_ENTRY_SIZE);
  const v = new DataView(desc.buffer);
  putField(v, 0, IMAGE_SEGMENTS_HEAD.count, segments.length);
  putField(v, 0, IMAGE_SEGMENTS_HEAD.notes_crc, crc32c(machine, 0, machine.length, crc32c(khoData)));
  segments.forEach((s, i) => {
    const at = IMAGE_SEGMENTS_HEAD_SIZE + i * IMAGE_SEGMENT_ENTRY_SIZE;
    putField(v, at, IMAGE_SEGMENT_ENTRY.paddr, s.paddr);
    putField(v, at, IMAGE_SEGMENT_ENTRY.size, s.bytes.length);
    putField(v, at, IMAGE_SEGMENT_ENTRY.crc, crc32c(s.bytes));
  });
  return desc;
}

/** Validates `img` and lays the file out. Throws EINVAL for a bad image, E2BIG for more segments than e_phnum holds. */
function planImage(img: HandoverImage): ImagePlan {
  if (typeof img !== 'object' || img === null) throw invalid(`image is ${show(img)} (wanted {khoData, machine, segments})`);
  const { khoData, machine, segments } = img;
  if (!(khoData instanceof Uint8Array) || khoData.length !== KHO_DATA_SIZE) {
    throw invalid(`kho_data is ${khoData instanceof Uint8Array ? `${khoData.length} bytes` : show(khoData)} (wanted ${KHO_DATA_SIZE} bytes)`);
  }
  const ram = checkMachine(machine);
  if (!Array.isArray(segments)) throw invalid(`segments is ${show(segments)} (wanted an array of {paddr, bytes})`);
  segments.forEach((s, i) => {
    if (typeof s !== 'object' || s === null || !(s.bytes instanceof Uint8Array)) {
      throw invalid(`segment ${i} is ${show(s)} (wanted {paddr, bytes: Uint8Array})`);
    }
  });
  checkSegments(
    segments.map((s) => ({ paddr: s.paddr, size: s.bytes.length })),
    (i) => `segment ${i}`,
    ram,
  );
  const phnum = 1 + segments.length;
  if (phnum >= PN_XNUM) {
    throw new KernelError(Errno.E2BIG, `image: ${segments.length} segments need ${phnum} program headers (wanted at most ${PN_XNUM - 1})`);
  }

  const { pageSize, ram: ranges, ...extra } = machine;
  let json: string;
  try {
    json = JSON.stringify({ pageSize, ram: ranges.map(({ start, size, node }) => ({ start, size, node })), ...extra });
  } catch (e) {
    throw invalid(`machine cannot be written as JSON: ${(e as Error).message} (wanted plain JSON values)`);
  }
  const machineDesc = new TextEncoder().encode(json);
  const notes: Array<[number, Uint8Array]> = [
    [NT_KHO_DATA, khoData],
    [NT_KHO_MACHINE, machineDesc],
    [NT_KHO_SEGMENTS, segmentsNote(khoData, machineDesc, segments)],
  ];

  const phoff = ELF64_EHDR_SIZE;
  const noteOff = phoff + phnum * ELF64_PHDR_SIZE;
  const notesSize = notes.reduce((n, [, desc]) => n + noteSize(desc), 0);
  const headEnd = noteOff + notesSize;
  const dataStart = segments.length > 0 ? align(headEnd, IMAGE_PAGE_SIZE) : headEnd;
  const offsets: number[] = [];
  let size = dataStart;
  for (const s of segments) {
    offsets.push(size);
    size += s.bytes.length;
  }

  const head = new Uint8Array(dataStart);
  const view = new DataView(head.buffer);
  head.set(ELFMAG, 0);
  head[EI_CLASS] = ELFCLASS64;
  head[EI_DATA] = ELFDATA2LSB;
  head[EI_VERSION] = EV_CURRENT;
  head[EI_OSABI] = ELFOSABI_NONE;
  head[EI_ABIVERSION] = 0;
  const ehdr: Array<[keyof typeof ELF64_EHDR, number]> = [
    ['e_type', ET_CORE],
    ['e_machine', EM_X86_64],
    ['e_version', EV_CURRENT],
    ['e_entry', 0],
    ['e_phoff', phoff],
    ['e_shoff', 0],
    ['e_flags', 0],
    ['e_ehsize', ELF64_EHDR_SIZE],
    ['e_phentsize', ELF64_PHDR_SIZE],
    ['e_phnum', phnum],
    ['e_shentsize', 0],
    ['e_shnum', 0],
    ['e_shstrndx', 0],
  ];
  for (const [f, v] of ehdr) putField(view, 0, ELF64_EHDR[f], v);

  const phdr = (i: number, fields: Record<keyof typeof ELF64_PHDR, number>): void => {
    for (const [f, v] of Object.entries(fields) as Array<[keyof typeof ELF64_PHDR, number]>) {
      putField(view, phoff + i * ELF64_PHDR_SIZE, ELF64_PHDR[f], v);
    }
  };
  // PT_NOTE as Linux core files write it: no memory image, 4-byte note alignment.
  phdr(0, { p_type: PT_NOTE, p_flags: 0, p_offset: noteOff, p_vaddr: 0, p_paddr: 0, p_filesz: notesSize, p_memsz: 0, p_align: NOTE_ALIGN });
  segments.forEach((s, i) => {
    const n = s.bytes.length;
    phdr(1 + i, {
      p_type: PT_LOAD,
      p_flags: IMAGE_LOAD_FLAGS,
      p_offset: offsets[i],
      p_vaddr: 0,
      p_paddr: s.paddr,
      p_filesz: n,
      p_memsz: n,
      p_align: IMAGE_PAGE_SIZE,
    });
  });

  let p = noteOff;
  for (const [type, desc] of notes) {
    putField(view, p, ELF64_NHDR.n_namesz, KHO_NOTE_NAME.length + 1);
    putField(view, p, ELF64_NHDR.n_descsz, desc.length);
    putField(view, p, ELF64_NHDR.n_type, type);
    const name = p + ELF64_NHDR_SIZE;
    head.set(new TextEncoder().encode(KHO_NOTE_NAME), name); // the NUL and the padding are already zero
    head.set(desc, name + align(KHO_NOTE_NAME.length + 1, NOTE_ALIGN));
    p += noteSize(desc);
  }
  return { head, segments, offsets, size };
}

/**
 * Returns the handover image as one ELF64 core file in memory (see image/abi.ts). For large machines prefer
 * {@link writeImageFile}, which never holds the whole file.
 * Throws EINVAL for a kho_data that is not 32 bytes, a bad machine description, or segments that are not page
 * aligned, ascending, disjoint and inside RAM; E2BIG for 65,535 segments or more; ENOMEM when the file is too
 * large for one buffer.
 */
export function encodeImage(img: HandoverImage): Uint8Array {
  const plan = planImage(img);
  let out: Uint8Array;
  try {
    out = new Uint8Array(plan.size);
  } catch {
    throw new KernelError(Errno.ENOMEM, `image: ${plan.size} bytes do not fit one buffer (wanted writeImageFile for an image this large)`);
  }
  out.set(plan.head, 0);
  plan.segments.forEach((s, i) => out.set(s.bytes, plan.offsets[i]));
  return out;
}

/** Writes all of `bytes` at the current position of `fd`; writeSync may write less than asked. */
function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) {
    done += writeSync(fd, bytes, done, Math.min(WRITE_CHUNK, bytes.length - done));
  }
}

/**
 * Writes the handover image to `path` atomically: the headers and notes, then each segment's bytes in chunks
 * (the file is never assembled in memory), into a temporary file beside `path` that is flushed to disk and then
 * renamed over `path`. A crash or an interrupt during the write leaves the previous `path` (or none), never a
 * truncated one; on a write error the temporary file is removed. Returns the file's size in bytes. Throws what
 * {@link encodeImage} throws (before touching any file), and KernelError(EIO) naming the file when the system
 * refuses to create, write or rename it.
 */
export function writeImageFile(path: string, img: HandoverImage): number {
  const plan = planImage(img);
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now().toString(36)}.tmp`);
  let fd: number;
  try {
    fd = openSync(tmp, 'wx', 0o644);
  } catch (e) {
    throw new KernelError(Errno.EIO, `image: cannot create ${path}: ${(e as Error).message}`, { cause: e });
  }
  try {
    writeAll(fd, plan.head);
    for (const s of plan.segments) writeAll(fd, s.bytes);
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, path);
  } catch (e) {
    if (fd >= 0) closeSync(fd);
    try {
      unlinkSync(tmp);
    } catch {
      // the write error is the one to report
    }
    throw new KernelError(Errno.EIO, `image: cannot write ${path}: ${(e as Error).message}`, { cause: e });
  }
  syncFolder(dirname(path));
  return plan.size;
}

/** Flushes a folder's entries (the rename) to disk; where a folder cannot be opened for that, the rename stands. */
function syncFolder(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // not every file system lets a folder be synced
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
