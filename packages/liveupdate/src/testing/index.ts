import { injectable, type DependencyContainer } from 'tsyringe';
import { Errno, KernelError, hex, registerPerBoot, type KernelModule } from '@kho/kernel';
import { ORDER_0, PAGE_SIZE, PhysicalMemory, pfn, toPhysAddr, type PhysAddr } from '@kho/physmem';
import { Kho, khoModule } from '@kho/kho-core';
import { LiveupdateFileHandler, type LiveupdateFileOpArgs, type LiveupdateFlb, type LiveupdateFlbOpArgs } from '../handler';
import { liveupdateModule } from '../module';
import { KernelFile } from '../vfs/file';
import type { Process } from '../vfs/process';

/**
 * A minimal file kind for LUO's own tests: a byte buffer. Its handler (`test-file-v1`) keeps the bytes in one
 * preserved block (`u64 length` then the bytes), can be told to fail any operation, and records every call.
 */
export interface TestFileData {
  bytes: Uint8Array;
}

const TEST_FILE_OPS = {
  read: (f: KernelFile, off: number, len: number) => (f.privateData as TestFileData).bytes.slice(off, off + len),
  write: (f: KernelFile, off: number, b: Uint8Array) => {
    const d = f.privateData as TestFileData;
    const grown = new Uint8Array(Math.max(d.bytes.length, off + b.length));
    grown.set(d.bytes);
    grown.set(b, off);
    d.bytes = grown;
    return b.length;
  },
  size: (f: KernelFile) => (f.privateData as TestFileData).bytes.length,
};

/** A new test file holding `bytes`, open in `proc`. Returns the fd. */
export function createTestFile(proc: Process, bytes: Uint8Array | string): number {
  const data = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes;
  return proc.installFile(new KernelFile('test-file', TEST_FILE_OPS, { bytes: data.slice() } satisfies TestFileData));
}

/** The bytes of a test file. */
export function testFileBytes(file: KernelFile): Uint8Array {
  return (file.privateData as TestFileData).bytes;
}

type Op = 'preserve' | 'unpreserve' | 'freeze' | 'unfreeze' | 'retrieve' | 'canFinish' | 'finish';

@injectable()
export class TestFileHandler implements LiveupdateFileHandler {
  compatible = 'test-file-v1';
  flbs: LiveupdateFlb[] = [];
  /** Operations told to fail, with the errno. */
  readonly fail = new Map<Op, Errno>();
  /** What canFinish answers. */
  canFinishResult = true;
  /** Every call: `op:token-or-file`. */
  readonly calls: string[] = [];

  constructor(
    private readonly kho: Kho,
    private readonly ram: PhysicalMemory,
  ) {}

  canPreserve(file: KernelFile): boolean {
    return file.ops === TEST_FILE_OPS;
  }

  preserve(args: LiveupdateFileOpArgs): void {
    this.step('preserve', args);
    const bytes = testFileBytes(args.file!);
    const rec = this.kho.allocPreserve(8 + Math.max(1, bytes.length));
    this.ram.writeU64(rec, bytes.length);
    this.ram.write(rec + 8, bytes);
    args.serializedData = rec;
  }

  unpreserve(args: LiveupdateFileOpArgs): void {
    this.step('unpreserve', args);
    this.kho.unpreserveFree(toPhysAddr(args.serializedData, 'test-file record'));
  }

  freeze(args: LiveupdateFileOpArgs): void {
    this.step('freeze', args);
  }

  unfreeze(args: LiveupdateFileOpArgs): void {
    this.step('unfreeze', args);
  }

  retrieve(args: LiveupdateFileOpArgs): void {
    this.step('retrieve', args);
    const rec = toPhysAddr(args.serializedData, 'test-file record');
    if (rec % PAGE_SIZE !== 0 || !this.ram.isRam(rec, 8)) throw new KernelError(Errno.EINVAL, `test-file record ${hex(rec)} is not RAM`);
    const len = this.ram.readU64(rec);
    if (len > 2 ** 20 || !this.ram.isRam(rec + 8, len)) throw new KernelError(Errno.EINVAL, `test-file record ${hex(rec)}: length ${len}`);
    const bytes = this.ram.read(rec + 8, len);
    this.kho.restoreFree(rec);
    args.file = new KernelFile('test-file', TEST_FILE_OPS, { bytes } satisfies TestFileData);
  }

  canFinish(args: LiveupdateFileOpArgs): boolean {
    this.calls.push(`canFinish:${args.retrieveStatus}`);
    return this.canFinishResult;
  }

  finish(args: LiveupdateFileOpArgs): void {
    this.calls.push(`finish:${args.retrieveStatus}`);
    // Never retrieved, or a retrieve told to fail before it read anything: the record is discarded.
    const rec = args.serializedData;
    if (args.retrieveStatus <= 0 && Number.isSafeInteger(rec) && rec % PAGE_SIZE === 0 && this.kho.isPreservedIncoming(pfn(rec / PAGE_SIZE), ORDER_0)) this.kho.restoreFree(rec as PhysAddr); // checked: a stamped page
  }

  private step(op: Op, args: LiveupdateFileOpArgs): void {
    this.calls.push(`${op}:${hex(args.serializedData)}`);
    const errno = this.fail.get(op);
    if (errno !== undefined) throw new KernelError(errno, `test-file ${op} told to fail`);
  }
}

/** An FLB for tests: one preserved page holding a counter; records every call. */
export class TestFlb implements LiveupdateFlb {
  readonly calls: string[] = [];
  failPreserve: Errno | undefined;

  constructor(
    private readonly kho: Kho,
    private readonly ram: PhysicalMemory,
    readonly compatible = 'test-flb-v1',
  ) {}

  preserve(a: LiveupdateFlbOpArgs): void {
    this.calls.push('preserve');
    if (this.failPreserve !== undefined) throw new KernelError(this.failPreserve, 'test-flb preserve told to fail');
    a.data = this.kho.allocPreserve(PAGE_SIZE);
    this.ram.writeU64(a.data, 0x51ab);
    a.obj = { page: a.data };
  }

  unpreserve(a: LiveupdateFlbOpArgs): void {
    this.calls.push('unpreserve');
    this.kho.unpreserveFree(toPhysAddr(a.data, 'test-flb page'));
  }

  retrieve(a: LiveupdateFlbOpArgs): void {
    this.calls.push(`retrieve:${hex(a.data)}`);
    a.obj = { page: a.data, magic: this.ram.readU64(a.data) };
  }

  finish(a: LiveupdateFlbOpArgs): void {
    this.calls.push('finish');
    this.kho.restoreFree(toPhysAddr((a.obj as { page: number }).page, 'test-flb page'));
  }
}

/** A kernel-image module contributing {@link TestFileHandler} (resolve it from the kernel to configure it). */
export function testFileModule(): KernelModule {
  return {
    name: 'test-file',
    register(c: DependencyContainer): void {
      registerPerBoot(c, TestFileHandler);
      c.register(LiveupdateFileHandler, { useToken: TestFileHandler });
    },
  };
}

/**
 * The modules of a LUO kernel after `base` (physmem, an early allocator and a tracker, from the caller: this
 * package does not depend on their packages): KHO, LUO and the test handler.
 */
export function luoTestImage(base: readonly KernelModule[], extra: readonly KernelModule[] = []): KernelModule[] {
  return [...base, khoModule(), liveupdateModule(), testFileModule(), ...extra];
}
