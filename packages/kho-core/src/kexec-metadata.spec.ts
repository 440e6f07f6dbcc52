import { Errno, KernelError } from '@kho/kernel';
import { PhysicalMemory } from '@kho/physmem';
import { checkGolden } from '@kho/struct/testing';
import { KhoKexecMetadataStruct } from './abi';
import { readKexecMetadata, writeKexecMetadata } from './kexec-metadata';

const ram = (): PhysicalMemory => new PhysicalMemory({ ranges: [{ start: 0, size: 2 ** 20, node: 0 }] });

describe('struct kho_kexec_metadata (golden bytes)', () => {
  it('is 73 packed bytes: version, previous_release[65], kexec_count', () => {
    expect(KhoKexecMetadataStruct.size).toBe(73);
    expect(KhoKexecMetadataStruct.table.map((f) => [f.name, f.offset, f.size])).toEqual([
      ['version', 0, 4],
      ['previous_release', 4, 65],
      ['kexec_count', 69, 4],
    ]);
    // the spec's golden example: release "7.2.0", count 2
    checkGolden(KhoKexecMetadataStruct, { version: 1, previous_release: '7.2.0', kexec_count: 2 }, `01 00 00 00 37 2e 32 2e 30 ${'00 '.repeat(60)} 02 00 00 00`);
  });
});

describe('readKexecMetadata (upstream checks, in order)', () => {
  it('reads what writeKexecMetadata wrote', () => {
    const r = ram();
    writeKexecMetadata(r, 0x1000, { previousRelease: '7.1.0-kho-lab', kexecCount: 41 });
    expect(readKexecMetadata(r, 0x1000, 73)).toEqual({ previousRelease: '7.1.0-kho-lab', kexecCount: 41 });
    // a larger blob-size is fine (a newer version may grow the struct)
    expect(readKexecMetadata(r, 0x1000, 4096).kexecCount).toBe(41);
  });

  it.each<[string, (r: PhysicalMemory) => void, number, string]>([
    ['a blob under 4 bytes', () => undefined, 3, 'kexec-metadata blob too small (3 bytes)'],
    ['an unknown version', (r) => r.writeU32(0x1000, 2), 73, 'kexec-metadata version 2 not supported (expected 1)'],
    ['a version-1 blob under 73 bytes', () => undefined, 72, 'kexec-metadata blob too small for v1 (72 < 73)'],
    // 4 bytes hold the version, so the version is read; only then is the blob too small for it
    ['a 4-byte blob', () => undefined, 4, 'kexec-metadata blob too small for v1 (4 < 73)'],
  ])('refuses %s', (_what, damage, size, reason) => {
    const r = ram();
    writeKexecMetadata(r, 0x1000, { previousRelease: 'x', kexecCount: 1 });
    damage(r);
    expect(() => readKexecMetadata(r, 0x1000, size)).toThrow(new KernelError(Errno.EINVAL, reason));
  });

  it('refuses a blob that is not RAM, naming where it is', () => {
    expect(() => readKexecMetadata(ram(), 2 ** 40, 73)).toThrow(new KernelError(Errno.EINVAL, 'kexec-metadata blob at 0x10000000000 is not RAM'));
    expect(() => readKexecMetadata(ram(), Infinity, 73)).toThrow(new KernelError(Errno.EINVAL, 'kexec-metadata blob at >= 2^53 is not RAM'));
  });

  it('reads a release that fills all 65 bytes without a NUL as a bounded copy of 64 characters', () => {
    const r = ram();
    writeKexecMetadata(r, 0x1000, { previousRelease: 'x', kexecCount: 7 });
    r.fill(0x1004, 65, 0x41);
    expect(readKexecMetadata(r, 0x1000, 73)).toEqual({ previousRelease: 'A'.repeat(64), kexecCount: 7 });
  });

  it('refuses a blob that runs outside RAM', () => {
    const r = ram();
    r.writeU32(2 ** 20 - 8, 1);
    expect(() => readKexecMetadata(r, 2 ** 20 - 8, 73)).toThrow(new KernelError(Errno.EINVAL, 'kexec-metadata blob runs outside RAM'));
    expect(() => readKexecMetadata(r, 2 ** 21, 73)).toThrow(new KernelError(Errno.EINVAL, 'kexec-metadata blob at 0x200000 is not RAM'));
  });
});
