import { inject, injectable, type DependencyContainer } from 'tsyringe';
import {
  Errno,
  KernelError,
  KernelInfo,
  KernelLog,
  MachineBus,
  SeededByteStream,
  SeededWords,
  hex,
  registerPerBoot,
  withUnwind,
  type KernelModule,
  type KernelPlugin,
  type PluginReport,
} from '@kho/kernel';
import { BuddyAllocator, Folio, MAX_PAGE_ORDER, PAGE_SIZE, PhysicalMemory, toPhysAddr } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KState, describe, phys, u64, vmallocBuf } from '@kho/kstate';
import { ReserveMem, type ReserveMemRegion } from '@kho/memblock';
import { Vmalloc } from '@kho/vmalloc';
import { CHECKSUM_SEED, checksumBlock, fillAndChecksum } from './data';

/** The self-test's kstate description id, and the reserve_mem region its log lives in. */
export const KHO_TEST_ID = 'kho_test';
export const KHO_TEST_LOG_REGION = 'kho_test_log';
/** The `reserve_mem=` the demo adds to every command line for its log. */
export const KHO_TEST_LOG_CMDLINE = `reserve_mem=64K:4K:${KHO_TEST_LOG_REGION}`;

/** The self-test's handover state, as kstate carries it. */
export interface KhoTestState {
  /** How many folios, and the vmalloc array of their `phys | order` entries. */
  nrFolios: bigint;
  folios: number;
  /** The checksum over every folio's bytes, in list order. */
  csum: bigint;
  /** Where the log region was (its pages are reserve_mem's to hand over). */
  logStart: number;
  logSize: bigint;
}

/**
 * The self-test's state description (kstate id `kho_test`, instance 0): the folio count, the vmalloc array of
 * `phys | order` entries (kstate preserves it and restores it into a new area), the checksum, the log region.
 */
export const KhoTestStateDesc = describe<KhoTestState>({
  name: 'kho_test',
  id: KHO_TEST_ID,
  version: 1,
  fields: [u64('nrFolios'), vmallocBuf('folios'), u64('csum'), phys('logStart'), u64('logSize')],
});

/** The demo's settings, from the command line of `kho demo`. */
export const KhoTestConfig = Symbol('KhoTestConfig');
export interface KhoTestConfig {
  /** Bytes of folios to allocate and preserve. */
  readonly mem: number;
  readonly seed: number;
  /** Range of the random folio orders (default 0..MAX_PAGE_ORDER). */
  readonly minOrder?: number;
  readonly maxOrder?: number;
}

/** What the restore half found. */
export interface KhoTestRestore {
  readonly folios: number;
  readonly bytes: number;
  readonly ordersMatch: boolean;
  readonly checksumExpected: string;
  readonly checksumActual: string;
  readonly verified: boolean;
  /** Milliseconds spent reading the folios' bytes for the checksum (the data work of the restore). */
  readonly verifyMs: number;
  /** The log region's lines, as the previous kernels left them (when the region came back). */
  readonly log: readonly string[];
}

/** What generate made: folios, bytes, and the milliseconds of its data work (filling and checksumming). */
export interface KhoTestGenerated {
  readonly folios: number;
  readonly bytes: number;
  readonly dataMs: number;
}

/** The log: a u32 byte count, then UTF-8 lines. Appends a line; returns every line. */
function appendLog(ram: PhysicalMemory, start: number, size: number, line: string | undefined): string[] {
  const used = Math.min(ram.readU32(start), size - 4);
  let text = new TextDecoder().decode(ram.read(start + 4, used));
  if (line !== undefined) {
    const bytes = new TextEncoder().encode(`${line}\n`);
    if (4 + used + bytes.length <= size) {
      ram.write(start + 4 + used, bytes);
      ram.writeU32(start, used + bytes.length);
      text += `${line}\n`;
    }
  }
  return text.split('\n').filter((l) => l.length > 0);
}

/**
 * The live-update self-test (after upstream's test_kho): folios of random order filled with seeded random
 * bytes, listed in a vmalloc array; the plugin describes its handover state with kstate (folio count, the
 * array, the checksum, its log region) and preserves every folio at prepare. The next kernel restores the state
 * and every folio, checks each order and the checksum, appends to the log kept in a `reserve_mem` region, and
 * at finish frees everything.
 */
@injectable()
export class KhoTest implements KernelPlugin {
  readonly name = 'kho-test';
  readonly after = ['kho'];

  private folios: Folio[] = [];
  private checksum = CHECKSUM_SEED;
  private prepared = false;
  private restoredList = 0;
  private restored: Folio[] = [];
  /** The outcome of the last restore, if one ran. */
  lastRestore: KhoTestRestore | undefined;

  constructor(
    private readonly kho: Kho,
    private readonly buddy: BuddyAllocator,
    private readonly ram: PhysicalMemory,
    private readonly log: KernelLog,
    private readonly vmalloc: Vmalloc,
    private readonly kstate: KState,
    private readonly reserveMem: ReserveMem,
    private readonly info: KernelInfo,
    @inject(KhoTestConfig) private readonly config: KhoTestConfig,
    private readonly bus: MachineBus,
  ) {}

  /**
   * Allocates folios of random order until `config.mem` bytes are used, fills them, checksums them, lists them
   * in a vmalloc array and registers the state with kstate (saved at prepare). Unwinds everything on failure.
   * Publishes `progress` (step 'generate', bytes of `config.mem`) as it goes, when someone listens.
   */
  generate(): KhoTestGenerated {
    // Orders from a small generator; the bytes from the seed's stream, in list order.
    const rng = new SeededWords(this.config.seed);
    const stream = new SeededByteStream(this.config.seed);
    let used = 0;
    let dataMs = 0;
    let h = CHECKSUM_SEED;
    withUnwind((u) => {
      while (used < this.config.mem) {
        const lo = this.config.minOrder ?? 0;
        const hi = this.config.maxOrder ?? MAX_PAGE_ORDER;
        let order = lo + Math.floor(rng.float() * (hi - lo + 1));
        while (order > 0 && PAGE_SIZE * 2 ** order > this.config.mem - used) order--;
        const folio = this.buddy.folioAlloc(order);
        u.push(() => this.buddy.folioPut(folio));
        const t0 = performance.now();
        h = fillAndChecksum(this.ram, folio, stream, h);
        dataMs += performance.now() - t0;
        this.folios.push(folio);
        used += folio.size;
        this.bus.publish('progress', () => ({ generation: this.info.generation, step: 'generate', done: used, total: this.config.mem }));
      }
      this.checksum = h;
      if (this.folios.length === 0) return;
      const list = this.vmalloc.vmalloc(this.folios.length * 8);
      u.push(() => this.vmalloc.vfree(list));
      this.folios.forEach((f, i) => this.vmalloc.writeU64(list + i * 8, f.phys + f.order));
      const region = this.logRegion();
      this.kstate.register(KhoTestStateDesc, 0, {
        nrFolios: BigInt(this.folios.length),
        folios: list,
        csum: BigInt(this.checksum),
        logStart: region?.start ?? 0,
        logSize: BigInt(region?.size ?? 0),
      });
      if (region) appendLog(this.ram, region.start, region.size, `generation ${this.info.generation}: ${this.folios.length} folios, checksum ${hex(this.checksum)}`);
    });
    this.log.info('kho-test', `generated ${this.folios.length} folios, ${used} bytes, checksum ${hex(this.checksum)}`);
    return { folios: this.folios.length, bytes: used, dataMs };
  }

  /** The folios generated in this boot. */
  get generated(): readonly Folio[] {
    return this.folios;
  }

  /** Preserves every folio (kstate preserves the state and the array at its own prepare). */
  prepare(): void {
    if (this.folios.length === 0) return;
    withUnwind((u) => {
      for (const f of this.folios) {
        this.kho.preserveFolio(f);
        u.push(() => this.kho.unpreserveFolio(f));
      }
    });
    this.prepared = true;
  }

  cancel(): void {
    if (!this.prepared) return;
    for (const f of this.folios) this.kho.unpreserveFolio(f);
    this.prepared = false;
  }

  /** Restores the state, every folio of the previous kernel's test, and verifies orders and checksum. */
  restore(): PluginReport | void {
    if (!this.kho.isKhoBoot()) return;
    let state: KhoTestState;
    try {
      state = this.kstate.restore(KhoTestStateDesc, 0).object;
    } catch (e) {
      if (e instanceof KernelError && e.errno === Errno.ENOENT) return; // the previous kernel ran no test
      throw e;
    }
    const nr = Number(state.nrFolios);
    const expected = Number(state.csum);
    const list = state.folios;
    this.restoredList = list;
    if (!Number.isSafeInteger(nr) || nr < 0 || nr > this.ram.totalBytes / PAGE_SIZE) {
      throw new KernelError(Errno.EINVAL, `kho_test nrFolios ${nr} is out of range`);
    }
    const area = this.vmalloc.findVmArea(list);
    if (!area || area.size < nr * 8) throw new KernelError(Errno.EINVAL, `kho_test folio list holds ${(area?.size ?? 0) / 8} entries (wanted ${nr})`);
    let h = CHECKSUM_SEED;
    let bytes = 0;
    let ordersMatch = true;
    let verifyMs = 0;
    for (let i = 0; i < nr; i++) {
      const entry = this.vmalloc.readU64(list + i * 8);
      const order = entry % PAGE_SIZE;
      const phys = entry - order;
      const folio = this.kho.restoreFolio(toPhysAddr(phys, `kho_test folio entry ${i}`));
      this.restored.push(folio);
      if (folio.order !== order) ordersMatch = false;
      const t0 = performance.now();
      h = checksumBlock(this.ram, folio.pfn, folio.order, h);
      verifyMs += performance.now() - t0;
      bytes += folio.size;
    }
    const verified = ordersMatch && h === expected;
    const region = this.logRegion();
    const log = region && region.revived && region.start === state.logStart ? appendLog(this.ram, region.start, region.size, `generation ${this.info.generation}: restored ${nr} folios, ${verified ? 'verified' : 'FAILED'}`) : [];
    this.lastRestore = { folios: nr, bytes, ordersMatch, checksumExpected: hex(expected), checksumActual: hex(h), verified, verifyMs, log };
    this.log.info('kho-test', `restored ${nr} folios (${bytes} bytes): ${verified ? 'verified' : 'VERIFICATION FAILED'}`);
    if (!verified) {
      throw new KernelError(Errno.EIO, `kho_test: checksum ${hex(h)} (wanted ${hex(expected)}), orders ${ordersMatch ? 'match' : 'differ'}`);
    }
    return { ...this.lastRestore };
  }

  /** Frees everything restored, as the matching frees of this boot's allocator. */
  finish(): PluginReport | void {
    const n = this.restored.length;
    for (const f of this.restored) this.buddy.folioPut(f);
    this.restored = [];
    if (this.restoredList !== 0) this.vmalloc.vfree(this.restoredList);
    this.restoredList = 0;
    if (n > 0) return { freedFolios: n };
  }

  private logRegion(): ReserveMemRegion | undefined {
    return this.reserveMem.regions.find((r) => r.name === KHO_TEST_LOG_REGION);
  }
}

/** The kernel-image module of the self-test. */
export function khoTestModule(config: KhoTestConfig): KernelModule {
  return {
    name: 'kho-test',
    register(c: DependencyContainer) {
      c.register(KhoTestConfig, { useValue: config });
      registerPerBoot(c, KhoTest, { plugin: true });
    },
  };
}

