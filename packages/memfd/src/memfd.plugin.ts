import { injectable, type DependencyContainer } from 'tsyringe';
import {
  Errno,
  KernelError,
  KernelLog,
  Unwind,
  hex,
  isKernelError,
  registerPerBoot,
  withUnwind,
  type KernelModule,
  type KernelPlugin,
  type PluginReport,
} from '@kho/kernel';
import { BuddyAllocator, PAGE_SIZE, PhysicalMemory, type Folio, type PhysAddr } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { MEMFD_HEADER_SIZE, MEMFD_SUBTREE, MEMFD_TABLE_MAX_SIZE, MemfdHeaderStruct } from './abi';
import { Memfd } from './memfd';
import { decodeMemfdTable, encodeMemfdTable, memfdTableChecksum, memfdTableSize } from './memfd.table';

/** What a restore took back. */
export interface MemfdRestoreReport {
  readonly files: number;
  readonly folios: number;
  /** Sum of the files' sizes. */
  readonly bytes: number;
}

/**
 * The live update of memfd files. At `prepare`, every folio of every file marked with `Memfd.preserve` is
 * preserved and the file table (spec: src/abi, kho-lab-memfd-v1) is written into a preserved block named in the root FDT
 * as subtree 'memfd'; preserved files are frozen. At `serialize` the table is sealed (its checksum written).
 * `cancel` runs the undo steps prepare recorded, last first. In the next kernel, `restore` checks the whole table
 * as hostile input, and against the blocks the previous kernel preserved, before it restores anything; then it
 * restores every folio and the files come back under their names. `finish` frees the table.
 */
@injectable()
export class MemfdPlugin implements KernelPlugin {
  readonly name = 'memfd';
  readonly after = ['kho'];

  /** The undo steps of a successful prepare, for cancel. */
  private prepared: Unwind | undefined;
  /** The outgoing table, from prepare until cancel or the jump. */
  private outgoing: { readonly phys: number; readonly size: number } | undefined;
  /** The previous kernel's table, restored, until finish frees it. */
  private incoming: Folio | undefined;

  constructor(
    private readonly memfd: Memfd,
    private readonly kho: Kho,
    private readonly ram: PhysicalMemory,
    private readonly buddy: BuddyAllocator,
    private readonly log: KernelLog,
  ) {}

  /** Phys and size of the table this kernel hands over (after prepare), for tools and tests. */
  get outgoingTable(): { readonly phys: number; readonly size: number } | undefined {
    return this.outgoing;
  }

  /**
   * Freezes the preserved files, preserves their folios, writes the table into a preserved block and adds
   * subtree 'memfd'. Throws E2BIG when the table would pass 4 MiB, ENOMEM, or EEXIST when the subtree exists;
   * on any failure the steps that succeeded are undone, last first.
   */
  prepare(): void {
    const u = new Unwind();
    try {
      this.memfd.freeze();
      u.push(() => this.memfd.thaw());
      const files = this.memfd.preservedFiles();
      if (files.length > 0) {
        const nrFolios = files.reduce((n, f) => n + f.folios.length, 0);
        const size = memfdTableSize(files.length, nrFolios); // E2BIG before anything is allocated
        for (const file of files) {
          for (const { folio } of file.folios) {
            this.kho.preserveFolio(folio); // ENOMEM (a tracker node)
            u.push(() => this.kho.unpreserveFolio(folio));
          }
        }
        const table = this.kho.allocPreserve(size); // ENOMEM
        u.push(() => this.kho.unpreserveFree(table));
        const bytes = encodeMemfdTable(
          files.map((f) => ({ name: f.name, size: f.size, folios: f.folios.map(({ offset, folio }) => ({ offset, phys: folio.phys, order: folio.order })) })),
        );
        this.ram.write(table, bytes);
        this.kho.addSubtree(MEMFD_SUBTREE, table, bytes.length); // EEXIST, ENOMEM
        u.push(() => this.kho.removeSubtree(table));
        this.outgoing = { phys: table, size };
        u.push(() => (this.outgoing = undefined));
        this.log.info('memfd', `prepare: ${files.length} files, ${nrFolios} folios preserved; table at ${hex(table)} (${size} bytes)`);
      }
    } catch (e) {
      const undoErrors = u.unwind();
      if (undoErrors.length > 0) throw new AggregateError([e, ...undoErrors], `memfd: undoing a failed prepare also failed ${undoErrors.length} time(s)`);
      throw e;
    }
    this.prepared = u;
  }

  /** Seals the table: writes the CRC-32 of its entries. Nothing here can fail. */
  serialize(): void {
    if (!this.outgoing) return;
    const { phys, size } = this.outgoing;
    this.ram.writeU32(phys + MemfdHeaderStruct.offsetOf('crc32'), memfdTableChecksum(this.ram.read(phys, size)));
  }

  /** Undoes prepare exactly: the steps it recorded, last first. */
  cancel(): void {
    const u = this.prepared;
    this.prepared = undefined;
    if (!u) return;
    const undoErrors = u.unwind();
    if (undoErrors.length > 0) throw new AggregateError(undoErrors, `memfd: cancel failed to undo ${undoErrors.length} step(s)`);
  }

  /**
   * Takes the previous kernel's files back. Everything is checked before anything is restored: the table block
   * and every folio must be blocks the previous kernel preserved (with those orders), the table must decode
   * (see decodeMemfdTable), no folio may overlap the table, and the names must be free here (EEXIST) and fit
   * (ENOSPC). A refused table restores nothing: its blocks stay reserved and KHO's finish reports them.
   * Returns {files, folios, bytes}, or nothing when the previous kernel handed no file over.
   */
  restore(): PluginReport | void {
    if (!this.kho.isKhoBoot()) return;
    let phys: PhysAddr;
    let blobSize: number | undefined;
    try {
      ({ phys, size: blobSize } = this.kho.retrieveSubtree(MEMFD_SUBTREE));
    } catch (e) {
      if (isKernelError(e, Errno.ENOENT)) return; // no file was preserved
      throw e;
    }
    const incoming = this.kho.incomingHandover!;
    const preserved = new Map<number, number>();
    incoming.pfns.forEach((pfn, i) => preserved.set(pfn, incoming.orders[i]));
    // The table's block size comes from the table's own header (table_size, as allocPreserve rounded it), never
    // from the tracker: a tracker that claims a larger block must not make this plugin adopt pages nobody preserved.
    const found = phys % PAGE_SIZE === 0 ? preserved.get(phys / PAGE_SIZE) : undefined;
    if (found === undefined) throw new KernelError(Errno.EINVAL, `memfd: the table at ${hex(phys)} is not a block the previous kernel preserved`);
    const tableSize = this.ram.readU32(phys + MemfdHeaderStruct.offsetOf('table_size'));
    if (tableSize < MEMFD_HEADER_SIZE || tableSize > MEMFD_TABLE_MAX_SIZE) {
      throw new KernelError(Errno.EINVAL, `memfd: the table at ${hex(phys)} says it is ${tableSize} bytes (wanted ${MEMFD_HEADER_SIZE}..${MEMFD_TABLE_MAX_SIZE})`);
    }
    if (blobSize !== undefined && blobSize !== tableSize) {
      throw new KernelError(Errno.EINVAL, `memfd: the subtree's blob-size ${blobSize} differs from the table's size ${tableSize}`);
    }
    const tableOrder = Math.max(0, Math.ceil(Math.log2(Math.ceil(tableSize / PAGE_SIZE))));
    if (found !== tableOrder) {
      throw new KernelError(
        Errno.EINVAL,
        `memfd: the table at ${hex(phys)} (${tableSize} bytes, an order-${tableOrder} block) is not a block the previous kernel preserved (it preserved order ${found} there)`,
      );
    }
    const tableEnd = phys + PAGE_SIZE * 2 ** tableOrder;
    const files = decodeMemfdTable(this.ram.read(phys, tableEnd - phys));
    for (const file of files) {
      for (const f of file.folios) {
        const order = preserved.get(f.phys / PAGE_SIZE);
        if (order !== f.order) {
          throw new KernelError(
            Errno.EINVAL,
            `memfd: file '${file.name}' folio at offset ${f.offset}: ${hex(f.phys)} order ${f.order} is not a block the previous kernel preserved` +
              (order === undefined ? '' : ` (it preserved order ${order} there)`),
          );
        }
        if (f.phys < tableEnd && phys < f.phys + PAGE_SIZE * 2 ** f.order) {
          throw new KernelError(Errno.EINVAL, `memfd: file '${file.name}' folio at offset ${f.offset}: ${hex(f.phys)} overlaps the table at ${hex(phys)}`);
        }
      }
      if (this.memfd.has(file.name)) throw new KernelError(Errno.EEXIST, `memfd: a file named '${file.name}' exists already in this kernel`);
    }
    if (files.length > this.memfd.freeSlots) {
      throw new KernelError(Errno.ENOSPC, `memfd: ${files.length} files to restore, room for ${this.memfd.freeSlots}`);
    }
    // Every check passed: restore. A failure now (a stamp someone else consumed) frees what was restored.
    const report = withUnwind((u) => {
      const table = this.kho.restoreFolio(phys);
      u.push(() => this.buddy.folioPut(table));
      const restored = files.map((file) => ({
        file,
        folios: file.folios.map((f) => {
          const folio = this.kho.restoreFolio(f.phys as PhysAddr); // checked above: a block the previous kernel preserved
          u.push(() => this.buddy.folioPut(folio));
          return { offset: f.offset, folio };
        }),
      }));
      for (const r of restored) this.memfd.adopt(r.file.name, r.file.size, r.folios);
      this.incoming = table;
      return {
        files: files.length,
        folios: restored.reduce((n, r) => n + r.folios.length, 0),
        bytes: files.reduce((n, f) => n + f.size, 0),
      } satisfies MemfdRestoreReport;
    });
    this.log.info('memfd', `restored ${report.files} files (${report.folios} folios, ${report.bytes} bytes): ${files.map((f) => f.name).join(', ')}`);
    return { ...report };
  }

  /** Frees the previous kernel's table: the handover is over. Returns the pages freed. */
  finish(): PluginReport | void {
    if (!this.incoming) return;
    const pages = this.incoming.nrPages;
    this.buddy.folioPut(this.incoming);
    this.incoming = undefined;
    return { freedTablePages: pages };
  }
}

/**
 * The kernel-image module of memfd: one `Memfd` (the files) and one `MemfdPlugin` (their live update) per boot.
 * The image must include KHO (and so a tracker and memblock).
 */
export function memfdModule(): KernelModule {
  return {
    name: 'memfd',
    register(c: DependencyContainer) {
      registerPerBoot(c, Memfd);
      registerPerBoot(c, MemfdPlugin, { plugin: true });
    },
  };
}
