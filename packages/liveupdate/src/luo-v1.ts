import { Errno, KernelError, describeError, hex, withUnwind, type KernelLog } from '@kho/kernel';
import { PAGE_SIZE, type PhysAddr, type PhysicalMemory } from '@kho/physmem';
import type { Kho } from '@kho/kho-core';
import type { KhoBlocks } from '@kho/kho-block';
import { FdtNode, decodeFdt, encodeFdt, fdtSize } from '@kho/fdt';
import {
  LUO_KHO_ENTRY_NAME,
  LUO_V1_COMPATIBLE,
  LUO_V1_FDT_SIZE,
  LUO_V1_FILE_MAX,
  LUO_V1_FILE_PGCNT,
  LUO_V1_FLB_COMPATIBLE,
  LUO_V1_FLB_HEADER,
  LUO_V1_FLB_NODE,
  LUO_V1_PROP_LIVEUPDATE_NUM,
  LUO_V1_SESSION_COMPATIBLE,
  LUO_V1_SESSION_HEADER,
  LUO_V1_SESSION_MAX,
  LUO_V1_SESSION_NODE,
  LUO_V1_SESSION_PGCNT,
  LuoFileSerStruct,
  LuoSessionSerStruct,
  LuoV1SessionHeaderSerStruct,
} from './abi';
import type { IncomingFlbEntry } from './flb';
import type { FileStore, IncomingLuo, LuoFormat, SessionStore } from './format';
import { addLuoSubtree, retrieveLuoSubtree } from './kho-subtree';
import { takeFlbPage, writeFlbPage } from './luo-v5';

const SESSION_AREA = LUO_V1_SESSION_PGCNT * PAGE_SIZE;
const SESSION_ORDER = Math.log2(LUO_V1_SESSION_PGCNT);
const FILE_AREA = LUO_V1_FILE_PGCNT * PAGE_SIZE;
const FILE_ORDER = Math.log2(LUO_V1_FILE_PGCNT);

/**
 * luo-v1, the 6.19-era FDT form (spec section 5.7; findings 5.4), as the later luo-v1 headers have it (with the
 * `luo-flb` node: a kernel with FLB support requires it, so the first luo-v1 kernels' handovers do not read here,
 * exactly as upstream). Subtree `LUO` is a one-page FDT; sessions live in one 16-page area (`{count}` + 80-byte
 * records, at most 819: the 820th create is ENOMEM); each session's files in a 2-page area allocated at its
 * first preserve and freed when its count returns to 0 (at most 128: the 129th preserve is ENOSPC).
 */
export class LuoV1Format implements LuoFormat {
  readonly compatible = LUO_V1_COMPATIBLE;
  readonly sessions: SessionStore;
  private fdtPhys = 0;
  private areaPhys = 0;
  private flbPhys = 0;

  constructor(
    private readonly kho: Kho,
    private readonly blocks: KhoBlocks,
    private readonly ram: PhysicalMemory,
    private readonly log: KernelLog,
  ) {
    this.sessions = {
      grow: (n) => {
        if (n > LUO_V1_SESSION_MAX) throw new KernelError(Errno.ENOMEM, `luo: the session area holds ${LUO_V1_SESSION_MAX} sessions (luo-v1)`);
      },
      shrink: () => undefined,
      iterator: () => {
        let i = 0;
        return {
          reserve: () => (i < LUO_V1_SESSION_MAX ? this.sessionSlot(i++) : undefined),
          prev: () => (i > 0 ? this.sessionSlot(--i) : undefined),
        };
      },
    };
  }

  private sessionSlot(i: number): number {
    return this.areaPhys + LuoV1SessionHeaderSerStruct.size + i * LuoSessionSerStruct.size;
  }

  setupOutgoing(liveupdateNum: number): void {
    withUnwind((u) => {
      const fdt = this.kho.allocPreserve(LUO_V1_FDT_SIZE);
      u.push(() => this.kho.unpreserveFree(fdt));
      const area = this.kho.allocPreserve(SESSION_AREA);
      u.push(() => this.kho.unpreserveFree(area));
      const flb = this.kho.allocPreserve(PAGE_SIZE);
      u.push(() => this.kho.unpreserveFree(flb));
      writeFlbPage(this.ram, flb, []);
      const root = new FdtNode('');
      root.setString('compatible', LUO_V1_COMPATIBLE);
      root.setU64LE(LUO_V1_PROP_LIVEUPDATE_NUM, liveupdateNum);
      root.addChild(LUO_V1_SESSION_NODE).setString('compatible', LUO_V1_SESSION_COMPATIBLE).setU64LE(LUO_V1_SESSION_HEADER, area);
      root.addChild(LUO_V1_FLB_NODE).setString('compatible', LUO_V1_FLB_COMPATIBLE).setU64LE(LUO_V1_FLB_HEADER, flb);
      this.ram.write(fdt, encodeFdt(root, { totalSize: LUO_V1_FDT_SIZE }));
      addLuoSubtree(this.kho, LUO_KHO_ENTRY_NAME, fdt, fdtSize(root));
      this.fdtPhys = fdt;
      this.areaPhys = area;
      this.flbPhys = flb;
    });
  }

  newFileStore(session: string): FileStore {
    return new V1FileStore(this.kho, this.ram, session, 0 as PhysAddr, false);
  }

  beginSerialize(): void {
    this.ram.writeU64(this.areaPhys, 0);
  }

  commitSessions(count: number): void {
    this.ram.writeU64(this.areaPhys, count);
  }

  writeFlbs(entries: readonly IncomingFlbEntry[]): void {
    writeFlbPage(this.ram, this.flbPhys, entries);
  }

  undoSerialize(): void {
    this.ram.writeU64(this.areaPhys, 0);
    writeFlbPage(this.ram, this.flbPhys, []);
  }

  get outgoingRoot(): number {
    return this.fdtPhys;
  }

  readIncoming(): IncomingLuo | undefined {
    const sub = retrieveLuoSubtree(this.kho, LUO_KHO_ENTRY_NAME);
    if (!sub) return undefined;
    const { phys, size } = sub;
    // The linux-mm variant of luo-v1 requires 0 < blob-size ≤ 4096 once sizes exist.
    if (size !== undefined && (size === 0 || size > LUO_V1_FDT_SIZE)) throw new KernelError(Errno.EINVAL, `LUO FDT blob-size ${size} (wanted 1..${LUO_V1_FDT_SIZE})`);
    if (!Number.isSafeInteger(phys) || !this.ram.isRam(phys, LUO_V1_FDT_SIZE)) {
      throw new KernelError(Errno.EINVAL, `LUO FDT at ${Number.isSafeInteger(phys) ? hex(phys) : '>= 2^53'} is not a page of RAM`);
    }
    let fdt: FdtNode;
    try {
      fdt = decodeFdt(this.ram.read(phys, LUO_V1_FDT_SIZE));
    } catch (e) {
      throw new KernelError(Errno.EINVAL, `LUO FDT at ${hex(phys)} is not a valid FDT: ${describeError(e, { errno: true })}`);
    }
    if (!hasCompatible(fdt, LUO_V1_COMPATIBLE)) throw new KernelError(Errno.EINVAL, `FDT '${LUO_KHO_ENTRY_NAME}' is incompatible with '${LUO_V1_COMPATIBLE}'`);
    const num = u64Prop(fdt, LUO_V1_PROP_LIVEUPDATE_NUM, `Unable to get live update number '${LUO_V1_PROP_LIVEUPDATE_NUM}'`, Errno.EINVAL);
    this.log.info('luo', `Retrieved live update data, liveupdate number: ${num}`);
    const sessionNode = fdt.child(LUO_V1_SESSION_NODE);
    if (!sessionNode) throw new KernelError(Errno.EINVAL, `Unable to get session node: [${LUO_V1_SESSION_NODE}]`);
    if (!hasCompatible(sessionNode, LUO_V1_SESSION_COMPATIBLE)) throw new KernelError(Errno.EINVAL, `Session node incompatible [${LUO_V1_SESSION_COMPATIBLE}]`);
    const area = u64Prop(sessionNode, LUO_V1_SESSION_HEADER, `Unable to get session header '${LUO_V1_SESSION_HEADER}'`, Errno.EINVAL);
    if (!this.blocks.isIncomingBlock(area, SESSION_ORDER) || !this.ram.isRam(area, SESSION_AREA)) {
      throw new KernelError(Errno.EINVAL, `Session header is not KHO preserved: ${Number.isFinite(area) ? hex(area) : '>= 2^53'} (wanted an order-${SESSION_ORDER} block)`);
    }
    const count = LuoV1SessionHeaderSerStruct.read(this.ram, area).count;
    if (count > LUO_V1_SESSION_MAX) throw new KernelError(Errno.EINVAL, `Invalid session count: ${Number.isFinite(count) ? count : '>= 2^53'} (wanted at most ${LUO_V1_SESSION_MAX})`);
    const flbNode = fdt.child(LUO_V1_FLB_NODE);
    if (!flbNode) throw new KernelError(Errno.ENOENT, `Unable to get FLB node: [${LUO_V1_FLB_NODE}] (a luo-v1 handover without FLBs)`);
    if (!hasCompatible(flbNode, LUO_V1_FLB_COMPATIBLE)) throw new KernelError(Errno.EINVAL, `FLB node incompatible [${LUO_V1_FLB_COMPATIBLE}]`);
    const flbs = u64Prop(flbNode, LUO_V1_FLB_HEADER, `Unable to get FLB header '${LUO_V1_FLB_HEADER}'`, Errno.EINVAL);
    const flb = takeFlbPage(this.kho, this.blocks, this.ram, flbs);
    // 6.19 keeps the incoming FDT for the whole boot; everything needed is read now, so the lab gives it back.
    if (phys % PAGE_SIZE === 0 && this.blocks.isIncomingPage(phys)) this.kho.restoreFree(phys);
    return new IncomingV1(this.kho, this.blocks, this.ram, num, area, count, flbs, flb.entries, flb.error);
  }
}

class IncomingV1 implements IncomingLuo {
  private areaGone = false;

  constructor(
    private readonly kho: Kho,
    private readonly blocks: KhoBlocks,
    private readonly ram: PhysicalMemory,
    readonly liveupdateNum: number,
    private readonly area: PhysAddr,
    private readonly count: number,
    readonly flbsPa: number,
    readonly flbs: readonly IncomingFlbEntry[] | undefined,
    readonly flbError: string | undefined,
  ) {}

  sessionEntries(): number[] {
    if (this.areaGone) return [];
    return Array.from({ length: this.count }, (_, i) => this.area + LuoV1SessionHeaderSerStruct.size + i * LuoSessionSerStruct.size);
  }

  destroySessions(): void {
    if (this.areaGone) return;
    this.areaGone = true;
    this.kho.restoreFree(this.area);
  }

  restoreFiles(files: number, count: number, session: string): FileStore {
    const where = `luo: files of session '${session}' at ${Number.isFinite(files) ? hex(files) : '>= 2^53'}`;
    if (!Number.isSafeInteger(files) || !this.ram.isRam(files, FILE_AREA) || !this.blocks.isIncomingBlock(files, FILE_ORDER)) {
      throw new KernelError(Errno.EINVAL, `${where}: not an order-${FILE_ORDER} block the previous kernel preserved`);
    }
    // 6.19 trusts the count and would read past the area: refused here.
    if (count > LUO_V1_FILE_MAX) throw new KernelError(Errno.EINVAL, `${where}: count ${Number.isFinite(count) ? count : '>= 2^53'} (wanted at most ${LUO_V1_FILE_MAX})`);
    const store = new V1FileStore(this.kho, this.ram, session, files, true);
    store.incomingCount = count;
    return store;
  }
}

/** A session's file area (2 pages, no header). */
class V1FileStore implements FileStore {
  incomingCount = 0;

  constructor(
    private readonly kho: Kho,
    private readonly ram: PhysicalMemory,
    private readonly session: string,
    private area: PhysAddr,
    private readonly incoming: boolean,
  ) {}

  get head(): number {
    return this.area;
  }

  grow(count: number): void {
    if (count > LUO_V1_FILE_MAX) throw new KernelError(Errno.ENOSPC, `luo: session '${this.session}' holds ${LUO_V1_FILE_MAX} files (luo-v1)`);
    if (count > 0 && this.area === 0) this.area = this.kho.allocPreserve(FILE_AREA);
  }

  shrink(count: number): void {
    if (count === 0) this.destroy();
  }

  writer(): { reserve(): number | undefined } {
    let i = 0;
    return { reserve: () => (this.area !== 0 && i < LUO_V1_FILE_MAX ? this.area + LuoFileSerStruct.size * i++ : undefined) };
  }

  clear(): void {
    if (this.area !== 0) this.ram.fill(this.area, FILE_AREA, 0);
  }

  destroy(): void {
    if (this.area === 0) return;
    const a = this.area;
    this.area = 0 as PhysAddr;
    if (this.incoming) this.kho.restoreFree(a);
    else this.kho.unpreserveFree(a);
  }

  entries(): number[] {
    if (this.area === 0) return [];
    return Array.from({ length: this.incomingCount }, (_, i) => this.area + i * LuoFileSerStruct.size);
  }
}

/** fdt_node_check_compatible: the node's compatible list holds `want`. */
export function hasCompatible(node: FdtNode, want: string): boolean {
  const p = node.getProp('compatible');
  if (!p) return false;
  return new TextDecoder().decode(p).split('\0').includes(want);
}

function u64Prop(node: FdtNode, name: string, what: string, errno: Errno): number {
  const p = node.getProp(name);
  if (!p || p.length !== 8) throw new KernelError(errno, `${what} [${p ? p.length : 'missing'}] (wanted 8 bytes)`);
  const v = new DataView(p.buffer, p.byteOffset, 8).getBigUint64(0, true);
  return v >= 2n ** 53n ? Infinity : Number(v);
}

