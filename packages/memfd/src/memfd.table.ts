import { Errno, KernelError, hex } from '@kho/kernel';
import { MAX_PHYS_ADDR, PAGE_SIZE } from '@kho/physmem';
import { offsetTable } from '@kho/struct';
import {
  MEMFD_FILE_SIZE,
  MEMFD_FOLIO_SIZE,
  MEMFD_HEADER_SIZE,
  MEMFD_MAGIC,
  MEMFD_MAX_FILES,
  MEMFD_MAX_FILE_SIZE,
  MEMFD_MAX_FOLIOS,
  MEMFD_MAX_FOLIO_ORDER,
  MEMFD_NAME_FIELD,
  MEMFD_NAME_MAX,
  MEMFD_ORDER_MASK,
  MEMFD_RESERVED_MASK,
  MEMFD_TABLE_MAX_SIZE,
  MEMFD_VERSION,
  MemfdFileStruct,
  MemfdFolioStruct,
  MemfdHeaderStruct,
} from './abi';
import { crc32 } from './crc32';

/** Field offsets of the table header, checked one by one before it is decoded. */
const HEADER = offsetTable(MemfdHeaderStruct);

/** Field offsets of a file entry. */
const FILE = offsetTable(MemfdFileStruct);

/** Field offsets of a folio entry, read and written in place. */
const FOLIO = offsetTable(MemfdFolioStruct);

/** One folio of a file, as the table records it. */
export interface MemfdTableFolio {
  /** Byte offset in the file: a multiple of the folio's size. */
  readonly offset: number;
  readonly phys: number;
  readonly order: number;
}

/** One file of the table: its name, its size, and its folios ascending by offset (holes read as zero). */
export interface MemfdTableFile {
  readonly name: string;
  readonly size: number;
  readonly folios: readonly MemfdTableFolio[];
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Bytes of a table of `nrFiles` files and `nrFolios` folios (header, file entries, folio entries). Throws ENOSPC
 * above MEMFD_MAX_FILES files and E2BIG when the table would not fit in the largest preserved block (4 MiB).
 */
export function memfdTableSize(nrFiles: number, nrFolios: number): number {
  if (nrFiles > MEMFD_MAX_FILES) throw new KernelError(Errno.ENOSPC, `memfd: ${nrFiles} files (a table holds at most ${MEMFD_MAX_FILES})`);
  const size = MEMFD_HEADER_SIZE + nrFiles * MEMFD_FILE_SIZE + nrFolios * MEMFD_FOLIO_SIZE;
  if (size > MEMFD_TABLE_MAX_SIZE) {
    throw new KernelError(
      Errno.E2BIG,
      `memfd: a table of ${nrFiles} files and ${nrFolios} folios needs ${size} bytes (at most ${MEMFD_TABLE_MAX_SIZE})`,
    );
  }
  return size;
}

/**
 * Encodes `files` as a kho-lab-memfd-v1 table (layout in ./abi), unsealed: crc32 is 0 until {@link sealMemfdTable}.
 * Returns exactly `table_size` bytes. The files must be valid (as the page cache keeps them); throws only ENOSPC
 * and E2BIG (see {@link memfdTableSize}) and EINVAL for a name longer than MEMFD_NAME_MAX bytes.
 */
export function encodeMemfdTable(files: readonly MemfdTableFile[]): Uint8Array {
  const nrFolios = files.reduce((n, f) => n + f.folios.length, 0);
  const size = memfdTableSize(files.length, nrFolios);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  MemfdHeaderStruct.encodeInto(out, 0, { magic: MEMFD_MAGIC, version: MEMFD_VERSION, nr_files: files.length, nr_folios: nrFolios, table_size: size, crc32: 0 });
  const foliosAt = MEMFD_HEADER_SIZE + files.length * MEMFD_FILE_SIZE;
  let next = 0;
  files.forEach((f, i) => {
    const at = MEMFD_HEADER_SIZE + i * MEMFD_FILE_SIZE;
    const name = utf8.encode(f.name);
    if (name.length > MEMFD_NAME_MAX) throw new KernelError(Errno.EINVAL, `memfd: name '${f.name}' is ${name.length} bytes (at most ${MEMFD_NAME_MAX})`);
    MemfdFileStruct.encodeInto(out, at, { name: f.name, size: BigInt(f.size), first_folio: next, nr_folios: f.folios.length });
    // One entry per folio (up to MEMFD_MAX_FOLIOS): written in place at MemfdFolioStruct's offsets.
    for (const folio of f.folios) {
      const fa = foliosAt + next * MEMFD_FOLIO_SIZE;
      v.setBigUint64(fa + FOLIO.offset, BigInt(folio.offset), true);
      v.setBigUint64(fa + FOLIO.phys_order, BigInt(folio.phys) | BigInt(folio.order), true);
      next++;
    }
  });
  return out;
}

/** The checksum a sealed table carries: CRC-32 of `table[MEMFD_HEADER_SIZE, table.length)`. */
export function memfdTableChecksum(table: Uint8Array): number {
  return crc32(table, MEMFD_HEADER_SIZE, table.length);
}

/** Seals a table (exactly `table_size` bytes) in place by writing its checksum. Returns the same bytes. */
export function sealMemfdTable(table: Uint8Array): Uint8Array {
  new DataView(table.buffer, table.byteOffset, table.length).setUint32(HEADER.crc32, memfdTableChecksum(table), true);
  return table;
}

function invalid(message: string): KernelError {
  return new KernelError(Errno.EINVAL, `memfd: ${message}`);
}

/**
 * Decodes a kho-lab-memfd-v1 table the previous kernel left in RAM (`block`: the whole preserved block, at least
 * `table_size` bytes). The bytes are hostile: every field is checked before it is used, and nothing is returned
 * unless all of it is valid. Returns the files. Throws EOPNOTSUPP for another version and EINVAL naming the first
 * problem: the header (magic, reserved fields, counts, table_size, checksum), a name (not NUL-terminated, empty,
 * bytes after the NUL, not UTF-8, a '/', twice), a size above MEMFD_MAX_FILE_SIZE, folio runs that do not tile
 * the folio array, a folio (reserved bits, order above MEMFD_MAX_FOLIO_ORDER, phys not aligned to its size or
 * above MAX_PHYS_ADDR, offset not a multiple of its size, outside the file, overlapping the previous one), or two
 * folios overlapping in memory.
 */
export function decodeMemfdTable(block: Uint8Array): MemfdTableFile[] {
  if (block.length < MEMFD_HEADER_SIZE) throw invalid(`table block is ${block.length} bytes (wanted at least ${MEMFD_HEADER_SIZE})`);
  // Magic, then version, then the reserved fields are checked in that order, each with its own message, before
  // the header is decoded as a whole (which then cannot fail).
  const v = new DataView(block.buffer, block.byteOffset, block.length);
  const magic = v.getUint32(HEADER.magic, true);
  if (magic !== MEMFD_MAGIC) throw invalid(`table magic ${hex(magic)} (wanted ${hex(MEMFD_MAGIC)})`);
  const version = v.getUint16(HEADER.version, true);
  if (version !== MEMFD_VERSION) {
    throw new KernelError(Errno.EOPNOTSUPP, `memfd: table version ${version} (this kernel reads version ${MEMFD_VERSION})`);
  }
  const reserved0 = v.getUint16(HEADER.reserved0, true);
  const reserved1 = v.getBigUint64(HEADER.reserved1, true);
  if (reserved0 !== 0 || reserved1 !== 0n) throw invalid(`reserved header fields are ${hex(reserved0)}, ${hex(reserved1)} (wanted 0)`);
  const { nr_files: nrFiles, nr_folios: nrFolios, table_size: size, crc32: stored } = MemfdHeaderStruct.decode(block);
  if (nrFiles > MEMFD_MAX_FILES) throw invalid(`table has ${nrFiles} files (at most ${MEMFD_MAX_FILES})`);
  if (nrFolios > MEMFD_MAX_FOLIOS) throw invalid(`table has ${nrFolios} folios (at most ${MEMFD_MAX_FOLIOS})`);
  const want = MEMFD_HEADER_SIZE + nrFiles * MEMFD_FILE_SIZE + nrFolios * MEMFD_FOLIO_SIZE;
  if (size !== want) throw invalid(`table_size ${size} (wanted ${want} for ${nrFiles} files and ${nrFolios} folios)`);
  if (size > block.length) throw invalid(`table_size ${size} runs past its block of ${block.length} bytes`);
  const actual = crc32(block, MEMFD_HEADER_SIZE, size);
  if (stored !== actual) throw invalid(`table crc32 is ${hex(stored)} but its bytes give ${hex(actual)} (not sealed at serialize, or damaged)`);

  const foliosAt = MEMFD_HEADER_SIZE + nrFiles * MEMFD_FILE_SIZE;
  const files: MemfdTableFile[] = [];
  const names = new Set<string>();
  const spans: Array<{ phys: number; end: number; name: string }> = [];
  let next = 0;
  for (let i = 0; i < nrFiles; i++) {
    const at = MEMFD_HEADER_SIZE + i * MEMFD_FILE_SIZE;
    // The name's own checks (and messages) come first; then the entry decodes without failing.
    const name = decodeName(block.subarray(at + FILE.name, at + FILE.name + MEMFD_NAME_FIELD), i);
    if (names.has(name)) throw invalid(`file ${i}: name '${name}' appears twice`);
    names.add(name);
    const { size: sizeBig, first_folio: first, nr_folios: count } = MemfdFileStruct.decode(block, at);
    if (sizeBig > BigInt(MEMFD_MAX_FILE_SIZE)) throw invalid(`file '${name}': size ${sizeBig} (at most ${MEMFD_MAX_FILE_SIZE})`);
    const fileSize = Number(sizeBig);
    if (first !== next) throw invalid(`file '${name}': first_folio ${first} (wanted ${next}: the folio runs tile the array in order)`);
    if (first + count > nrFolios) throw invalid(`file '${name}': folios ${first}..${first + count - 1} run past the ${nrFolios} folio entries`);
    const folios: MemfdTableFolio[] = [];
    let end = 0;
    for (let j = 0; j < count; j++) {
      const fa = foliosAt + (first + j) * MEMFD_FOLIO_SIZE;
      const what = `file '${name}' folio ${j}`;
      // One entry per folio: read in place at MemfdFolioStruct's offsets.
      const offsetBig = v.getBigUint64(fa + FOLIO.offset, true);
      const physOrder = v.getBigUint64(fa + FOLIO.phys_order, true);
      const low = Number(physOrder & 0xfffn);
      if ((low & MEMFD_RESERVED_MASK) !== 0) throw invalid(`${what}: reserved bits of phys_order ${hex(physOrder)} are set`);
      const order = low & MEMFD_ORDER_MASK;
      if (order > MEMFD_MAX_FOLIO_ORDER) throw invalid(`${what}: order ${order} (wanted 0..${MEMFD_MAX_FOLIO_ORDER})`);
      const bytes = PAGE_SIZE * 2 ** order;
      const physBig = physOrder - BigInt(low);
      if (physBig + BigInt(bytes) > BigInt(MAX_PHYS_ADDR)) throw invalid(`${what}: phys ${hex(physBig)} order ${order} ends above ${hex(MAX_PHYS_ADDR)}`);
      const phys = Number(physBig);
      if (phys % bytes !== 0) throw invalid(`${what}: phys ${hex(phys)} is not aligned to its size (order ${order})`);
      if (offsetBig >= sizeBig) throw invalid(`${what}: offset ${offsetBig} is not inside the file (size ${fileSize})`);
      const offset = Number(offsetBig);
      if (offset % bytes !== 0) throw invalid(`${what}: offset ${offset} is not a multiple of its size ${bytes}`);
      if (offset < end) throw invalid(`${what}: offset ${offset} overlaps the folio before it, which ends at ${end}`);
      end = offset + bytes;
      folios.push({ offset, phys, order });
      spans.push({ phys, end: phys + bytes, name });
    }
    next += count;
    files.push({ name, size: fileSize, folios });
  }
  if (next !== nrFolios) throw invalid(`the files own ${next} folio entries (wanted all ${nrFolios})`);
  spans.sort((a, b) => a.phys - b.phys);
  for (let k = 1; k < spans.length; k++) {
    const [a, b] = [spans[k - 1], spans[k]];
    if (b.phys < a.end) throw invalid(`folios at ${hex(a.phys)} (file '${a.name}') and ${hex(b.phys)} (file '${b.name}') overlap in memory`);
  }
  return files;
}

/** A name field: NUL-terminated, non-empty, zero after the NUL, UTF-8, no '/'. */
function decodeName(field: Uint8Array, i: number): string {
  const nul = field.indexOf(0);
  if (nul < 0) throw invalid(`file ${i}: name is not NUL-terminated within ${MEMFD_NAME_FIELD} bytes`);
  if (nul === 0) throw invalid(`file ${i}: name is empty`);
  if (field.subarray(nul).some((b) => b !== 0)) throw invalid(`file ${i}: name field has bytes after its NUL (wanted zero)`);
  let name: string;
  try {
    name = strictUtf8.decode(field.subarray(0, nul));
  } catch {
    throw invalid(`file ${i}: name is not UTF-8`);
  }
  if (name.includes('/')) throw invalid(`file ${i}: name '${name}' contains '/'`);
  return name;
}
