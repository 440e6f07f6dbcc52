import { Errno, KernelError, describeError, hex, withUnwind, type KernelLog } from '@kho/kernel';
import { PAGE_SIZE, type PhysicalMemory } from '@kho/physmem';
import type { Kho } from '@kho/kho-core';
import { KhoBlockSet, type KhoBlocks } from '@kho/kho-block';
import {
  LUO_ABI_COMPATIBLE,
  LUO_ABI_COMPAT_LEN,
  LUO_FLB_MAX,
  LUO_KHO_ENTRY_NAME,
  LuoFileSerStruct,
  LuoFlbHeaderSerStruct,
  LuoFlbSerStruct,
  LuoSerStruct,
  LuoSessionSerStruct,
} from './abi';
import type { IncomingFlbEntry } from './flb';
import type { FileStore, IncomingLuo, LuoFormat, SessionStore } from './format';
import { addLuoSubtree, retrieveLuoSubtree } from './kho-subtree';

const OFF_SESSIONS_PA = LuoSerStruct.offsetOf('sessions_pa');

/**
 * luo-v5, 7.2's raw form (spec section 5.9): subtree `LUO` is a 32-byte `luo_ser` (compatible, live-update number,
 * first session block, FLB page); sessions are a kho_block set of 80-byte records, each session's files a
 * kho_block set of 64-byte records; the FLB page holds a 16-byte header and up to 63 entries.
 */
export class LuoV5Format implements LuoFormat {
  readonly compatible = LUO_ABI_COMPATIBLE;
  readonly sessions: SessionStore;
  private readonly sessionSet: KhoBlockSet;
  private serPhys = 0;
  private flbPhys = 0;

  constructor(
    private readonly kho: Kho,
    private readonly blocks: KhoBlocks,
    private readonly ram: PhysicalMemory,
    private readonly log: KernelLog,
  ) {
    this.sessionSet = blocks.createSet(LuoSessionSerStruct.size, 'luo: sessions');
    const set = this.sessionSet;
    this.sessions = {
      grow: (n) => set.grow(n),
      shrink: (n) => set.shrink(n),
      iterator: () => {
        const it = set.iterator();
        return { reserve: () => it.reserveEntry(), prev: () => it.prev() };
      },
    };
  }

  get outgoingRoot(): number {
    return this.serPhys;
  }

  setupOutgoing(liveupdateNum: number): void {
    withUnwind((u) => {
      const ser = this.kho.allocPreserve(LuoSerStruct.size);
      u.push(() => this.kho.unpreserveFree(ser));
      const flb = this.kho.allocPreserve(PAGE_SIZE);
      u.push(() => this.kho.unpreserveFree(flb));
      LuoFlbHeaderSerStruct.write(this.ram, flb, { pgcnt: 1, count: 0 });
      LuoSerStruct.write(this.ram, ser, { compatible: LUO_ABI_COMPATIBLE, liveupdate_num: liveupdateNum, sessions_pa: 0, flbs_pa: flb });
      addLuoSubtree(this.kho, LUO_KHO_ENTRY_NAME, ser, LuoSerStruct.size);
      this.serPhys = ser;
      this.flbPhys = flb;
    });
  }

  newFileStore(session: string): FileStore {
    return blockFileStore(this.blocks.createSet(LuoFileSerStruct.size, `luo: files of session '${session}'`));
  }

  beginSerialize(): void {
    this.ram.writeU64(this.serPhys + OFF_SESSIONS_PA, 0);
  }

  commitSessions(count: number): void {
    if (count > 0) this.ram.writeU64(this.serPhys + OFF_SESSIONS_PA, this.sessionSet.headPa);
  }

  writeFlbs(entries: readonly IncomingFlbEntry[]): void {
    writeFlbPage(this.ram, this.flbPhys, entries);
  }

  undoSerialize(): void {
    this.ram.writeU64(this.serPhys + OFF_SESSIONS_PA, 0);
    writeFlbPage(this.ram, this.flbPhys, []);
  }

  readIncoming(): IncomingLuo | undefined {
    const sub = retrieveLuoSubtree(this.kho, LUO_KHO_ENTRY_NAME);
    if (!sub) return undefined;
    const { phys, size } = sub;
    if (size !== undefined && size < LuoSerStruct.size) throw new KernelError(Errno.EINVAL, `LUO state is too small (${size} < ${LuoSerStruct.size})`);
    if (!Number.isSafeInteger(phys) || !this.ram.isRam(phys, LuoSerStruct.size)) {
      throw new KernelError(Errno.EINVAL, `LUO state at ${Number.isSafeInteger(phys) ? hex(phys) : '>= 2^53'} is not RAM`);
    }
    const raw = this.ram.read(phys, LUO_ABI_COMPAT_LEN);
    if (!strncmpEqual(raw, LUO_ABI_COMPATIBLE)) {
      throw new KernelError(Errno.EINVAL, `LUO state is incompatible with '${LUO_ABI_COMPATIBLE}' (found '${printable(raw)}')`);
    }
    const ser = LuoSerStruct.read(this.ram, phys);
    const num = ser.liveupdate_num;
    this.log.info('luo', `Retrieved live update data, liveupdate number: ${Number.isFinite(num) ? num : '>= 2^53'}`);
    const sessions = this.blocks.createSet(LuoSessionSerStruct.size, 'luo: incoming sessions');
    try {
      sessions.restore(ser.sessions_pa);
    } finally {
      this.freeSer(phys);
    }
    const flb = takeFlbPage(this.kho, this.blocks, this.ram, ser.flbs_pa);
    return new IncomingV5(this.blocks, num, sessions, ser.flbs_pa, flb.entries, flb.error);
  }

  /** Upstream restores and frees the `luo_ser` page on success and on failure; a page that was not preserved is left alone. */
  private freeSer(phys: number): void {
    if (phys % PAGE_SIZE === 0 && this.blocks.isIncomingPage(phys)) this.kho.restoreFree(phys);
    else this.log.warn('luo', `LUO state at ${hex(phys)} is not a preserved page: not freed`);
  }
}

class IncomingV5 implements IncomingLuo {
  constructor(
    private readonly blocks: KhoBlocks,
    readonly liveupdateNum: number,
    private readonly sessions: KhoBlockSet,
    readonly flbsPa: number,
    readonly flbs: readonly IncomingFlbEntry[] | undefined,
    readonly flbError: string | undefined,
  ) {}

  sessionEntries(): number[] {
    return [...this.sessions.entries()];
  }

  destroySessions(): void {
    this.sessions.destroy();
  }

  restoreFiles(files: number, _count: number, session: string): FileStore {
    const set = this.blocks.createSet(LuoFileSerStruct.size, `luo: files of session '${session}'`);
    set.restore(files);
    return blockFileStore(set);
  }
}

/**
 * Reads the previous kernel's FLB page (entries, or why it was refused) and gives the page back when it was a
 * preserved page. Upstream 7.2 keeps the page reserved for the whole boot; the lab frees it once read, as it frees
 * KHO's own metadata, so a finished live update leaks nothing.
 */
export function takeFlbPage(kho: Kho, blocks: KhoBlocks, ram: PhysicalMemory, page: number): { entries?: IncomingFlbEntry[]; error?: string } {
  if (page === 0) return {};
  let out: { entries?: IncomingFlbEntry[]; error?: string };
  try {
    out = { entries: readFlbPage(ram, page, (p) => blocks.isIncomingPage(p)) };
  } catch (e) {
    out = { error: describeError(e, { errno: true }) };
  }
  if (Number.isSafeInteger(page) && page % PAGE_SIZE === 0 && blocks.isIncomingPage(page)) kho.restoreFree(page);
  return out;
}

function blockFileStore(set: KhoBlockSet): FileStore {
  return {
    grow: (n) => set.grow(n),
    shrink: (n) => set.shrink(n),
    writer: () => {
      const it = set.iterator();
      return { reserve: () => it.reserveEntry() };
    },
    clear: () => set.clear(),
    get head() {
      return set.headPa;
    },
    destroy: () => set.destroy(),
    entries: () => [...set.entries()],
  };
}

/** Writes the FLB page: header {pgcnt 1, count}, the entries, zeros after them. */
export function writeFlbPage(ram: PhysicalMemory, page: number, entries: readonly IncomingFlbEntry[]): void {
  ram.fill(page + LuoFlbHeaderSerStruct.size, PAGE_SIZE - LuoFlbHeaderSerStruct.size, 0);
  LuoFlbHeaderSerStruct.write(ram, page, { pgcnt: 1, count: entries.length });
  entries.forEach((e, i) => LuoFlbSerStruct.write(ram, page + LuoFlbHeaderSerStruct.size + i * LuoFlbSerStruct.size, { name: e.name, data: e.data, count: e.count }));
}

/**
 * Reads the previous kernel's FLB page. Upstream 7.2 validates nothing here (it would read past the page for a
 * count above 63); this reader refuses, naming the field: a page that is not preserved RAM, pgcnt ≠ 1, count above
 * 63, a name without its NUL.
 */
export function readFlbPage(ram: PhysicalMemory, page: number, isPreserved: (phys: number) => boolean): IncomingFlbEntry[] {
  if (page === 0) return [];
  if (!Number.isSafeInteger(page) || page % PAGE_SIZE !== 0 || !ram.isRam(page, PAGE_SIZE)) {
    throw new KernelError(Errno.EINVAL, `FLB page ${Number.isSafeInteger(page) ? hex(page) : '>= 2^53'} is not a page of RAM`);
  }
  if (!isPreserved(page)) throw new KernelError(Errno.EINVAL, `FLB page ${hex(page)} is not a page the previous kernel preserved`);
  const h = LuoFlbHeaderSerStruct.read(ram, page);
  if (h.pgcnt !== 1) throw new KernelError(Errno.EINVAL, `FLB page ${hex(page)}: pgcnt ${h.pgcnt} (wanted 1)`);
  if (h.count > LUO_FLB_MAX) throw new KernelError(Errno.EINVAL, `FLB page ${hex(page)}: count ${Number.isFinite(h.count) ? h.count : '>= 2^53'} (wanted at most ${LUO_FLB_MAX})`);
  const out: IncomingFlbEntry[] = [];
  for (let i = 0; i < h.count; i++) {
    const at = page + LuoFlbHeaderSerStruct.size + i * LuoFlbSerStruct.size;
    const raw = ram.read(at, LuoFlbSerStruct.size);
    if (raw.subarray(0, 48).indexOf(0) < 0) throw new KernelError(Errno.EINVAL, `FLB page ${hex(page)}: entry ${i} name has no NUL in its 48 bytes`);
    const e = LuoFlbSerStruct.decode(raw);
    out.push({ name: e.name, data: e.data, count: e.count });
  }
  return out;
}

/** strncmp(raw, want, raw.length) === 0: equal up to the first NUL (or all of raw). */
export function strncmpEqual(raw: Uint8Array, want: string): boolean {
  const w = new TextEncoder().encode(want);
  for (let i = 0; i < raw.length; i++) {
    const a = raw[i];
    const b = i < w.length ? w[i] : 0;
    if (a !== b) return false;
    if (a === 0) return true;
  }
  return true;
}

/** Bytes up to the first NUL as text, non-printable bytes escaped. */
export function printable(raw: Uint8Array): string {
  const end = raw.indexOf(0);
  return Array.from(raw.subarray(0, end < 0 ? raw.length : end), (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`)).join('');
}
