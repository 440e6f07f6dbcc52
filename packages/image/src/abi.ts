/**
 * The handover image file (docs/abi/kho.md section 10, a project format): a machine's RAM at the moment of kexec,
 * so the next kernel can boot in another process and outside tools (readelf, gdb, crash) can read it.
 *
 * It is an **ELF64 little-endian core file** (`ET_CORE`, `EM_X86_64`, `EI_OSABI` 0, version 1), laid out as:
 *
 *   ELF header (64) | program headers (56 each): one PT_NOTE, then one PT_LOAD per run of populated pages,
 *   ascending | the notes | zero padding to a page | the segments' bytes, each page aligned, in order
 *
 * - PT_LOAD: `p_paddr` = physical address, `p_vaddr` = 0, `p_filesz = p_memsz` (a non-zero multiple of
 *   4096), `p_flags` = RWX, `p_align` = 4096, `p_offset` page aligned. Pages in no segment read as zero.
 * - PT_NOTE (`p_align` 4, `p_memsz` 0 as Linux core files have it): ELF notes with 4-byte padding of name
 *   and descriptor, owner "KHO" (namesz 4 with its NUL):
 *   - `NT_KHO_DATA` (0x4b484f01): the 32-byte `struct kho_data` of section 1;
 *   - `NT_KHO_MACHINE` (0x4b484f02): the machine as UTF-8 JSON
 *     `{"pageSize":4096,"ram":[{"start":n,"size":n,"node":n},...], ...further keys}`;
 *   - `NT_KHO_SEGMENTS` (0x4b484f03): the checksums that bind the rest together: u32 count of PT_LOADs, u32
 *     crc32c of the kho_data descriptor followed by the machine descriptor, then per PT_LOAD in ascending
 *     p_paddr order `{u64 paddr, u64 size, u32 crc32c of its bytes, u32 0}` (24 bytes).
 *
 * This is a contract between two simulator processes and with ELF tools. A change to the layout or to the
 * meaning of a note takes new note type numbers; new JSON keys need none (readers ignore keys they do not know).
 * Imports nothing from the implementation.
 */

/** A field of a fixed layout: byte offset and size. Integer fields are little-endian. */
export interface ElfField {
  readonly offset: number;
  readonly size: number;
}

/** `e_ident` bytes. */
export const EI_NIDENT = 16;
export const ELFMAG = [0x7f, 0x45, 0x4c, 0x46] as const; // "\x7fELF"
export const EI_CLASS = 4;
export const ELFCLASS64 = 2;
export const EI_DATA = 5;
export const ELFDATA2LSB = 1;
export const EI_VERSION = 6;
export const EV_CURRENT = 1;
export const EI_OSABI = 7;
export const ELFOSABI_NONE = 0;
export const EI_ABIVERSION = 8;

export const ET_CORE = 4;
export const EM_X86_64 = 62;

export const PT_LOAD = 1;
export const PT_NOTE = 4;
export const PF_X = 0x1;
export const PF_W = 0x2;
export const PF_R = 0x4;
/** `e_phnum` value meaning "the count is elsewhere" (extended numbering); this format does not use it. */
export const PN_XNUM = 0xffff;

/** `Elf64_Ehdr`, 64 bytes. */
export const ELF64_EHDR = {
  e_ident: { offset: 0, size: 16 },
  e_type: { offset: 16, size: 2 },
  e_machine: { offset: 18, size: 2 },
  e_version: { offset: 20, size: 4 },
  e_entry: { offset: 24, size: 8 },
  e_phoff: { offset: 32, size: 8 },
  e_shoff: { offset: 40, size: 8 },
  e_flags: { offset: 48, size: 4 },
  e_ehsize: { offset: 52, size: 2 },
  e_phentsize: { offset: 54, size: 2 },
  e_phnum: { offset: 56, size: 2 },
  e_shentsize: { offset: 58, size: 2 },
  e_shnum: { offset: 60, size: 2 },
  e_shstrndx: { offset: 62, size: 2 },
} as const satisfies Record<string, ElfField>;
export const ELF64_EHDR_SIZE = 64;

/** `Elf64_Phdr`, 56 bytes. */
export const ELF64_PHDR = {
  p_type: { offset: 0, size: 4 },
  p_flags: { offset: 4, size: 4 },
  p_offset: { offset: 8, size: 8 },
  p_vaddr: { offset: 16, size: 8 },
  p_paddr: { offset: 24, size: 8 },
  p_filesz: { offset: 32, size: 8 },
  p_memsz: { offset: 40, size: 8 },
  p_align: { offset: 48, size: 8 },
} as const satisfies Record<string, ElfField>;
export const ELF64_PHDR_SIZE = 56;

/** `Elf64_Nhdr`, 12 bytes, followed by the name and the descriptor, each padded to NOTE_ALIGN. */
export const ELF64_NHDR = {
  n_namesz: { offset: 0, size: 4 },
  n_descsz: { offset: 4, size: 4 },
  n_type: { offset: 8, size: 4 },
} as const satisfies Record<string, ElfField>;
export const ELF64_NHDR_SIZE = 12;
export const NOTE_ALIGN = 4;

/** Note owner of the KHO notes; on the wire "KHO\0", namesz 4. */
export const KHO_NOTE_NAME = 'KHO';
/** Descriptor: the 32-byte `struct kho_data` (docs/abi/kho.md section 1). */
export const NT_KHO_DATA = 0x4b484f01;
/** Descriptor: the machine description, UTF-8 JSON. */
export const NT_KHO_MACHINE = 0x4b484f02;
/** Descriptor: the segment and note checksums (layout {@link IMAGE_SEGMENTS_HEAD} then {@link IMAGE_SEGMENT_ENTRY} per PT_LOAD). */
export const NT_KHO_SEGMENTS = 0x4b484f03;
/** Head of the NT_KHO_SEGMENTS descriptor, 8 bytes. */
export const IMAGE_SEGMENTS_HEAD = {
  count: { offset: 0, size: 4 },
  notes_crc: { offset: 4, size: 4 },
} as const satisfies Record<string, ElfField>;
export const IMAGE_SEGMENTS_HEAD_SIZE = 8;
/** One PT_LOAD's entry in the NT_KHO_SEGMENTS descriptor, 24 bytes. */
export const IMAGE_SEGMENT_ENTRY = {
  paddr: { offset: 0, size: 8 },
  size: { offset: 8, size: 8 },
  crc: { offset: 16, size: 4 },
  reserved: { offset: 20, size: 4 },
} as const satisfies Record<string, ElfField>;
export const IMAGE_SEGMENT_ENTRY_SIZE = 24;

/**
 * Bytes of the kho_data note's descriptor: `struct kho_data` (docs/abi/kho.md section 1). The image carries it as
 * opaque bytes; kho-core owns the layout, and its tests pin that its size is this one.
 */
export const KHO_DATA_SIZE = 32;

/** Page size of the simulated machine, and the alignment of PT_LOAD segments in memory and in the file. */
export const IMAGE_PAGE_SIZE = 4096;
/** p_flags of a PT_LOAD: RAM is readable, writable and executable. */
export const IMAGE_LOAD_FLAGS = PF_R | PF_W | PF_X;
