import { Errno, KernelError, hex } from '@kho/kernel';
import type { PhysicalMemory } from '@kho/physmem';
import { KHO_KEXEC_METADATA_VERSION, KhoKexecMetadataStruct, NEW_UTS_LEN } from './abi';

/** What a kexec-metadata blob says: the release that wrote it and how many kexecs since the last cold boot. */
export interface KexecMetadata {
  readonly previousRelease: string;
  readonly kexecCount: number;
}

/**
 * Reads the previous kernel's kexec-metadata blob at `phys`, `size` bytes as its subtree's `blob-size` says, with
 * upstream's checks in upstream's order: fewer than 4 bytes, a version other than 1, fewer than 73 bytes for
 * version 1 — each refused with EINVAL naming what was found (upstream ignores such a blob with a warning, and so
 * does the caller). The release is read bounded (at most 64 bytes; a missing NUL is tolerated, as a bounded copy).
 */
export function readKexecMetadata(ram: PhysicalMemory, phys: number, size: number): KexecMetadata {
  if (size < 4) throw new KernelError(Errno.EINVAL, `kexec-metadata blob too small (${size} bytes)`);
  if (!ram.isRam(phys, 4)) throw new KernelError(Errno.EINVAL, `kexec-metadata blob at ${Number.isFinite(phys) ? hex(phys) : '>= 2^53'} is not RAM`);
  const version = ram.readU32(phys);
  if (version !== KHO_KEXEC_METADATA_VERSION) {
    throw new KernelError(Errno.EINVAL, `kexec-metadata version ${version} not supported (expected ${KHO_KEXEC_METADATA_VERSION})`);
  }
  if (size < KhoKexecMetadataStruct.size) {
    throw new KernelError(Errno.EINVAL, `kexec-metadata blob too small for v1 (${size} < ${KhoKexecMetadataStruct.size})`);
  }
  if (!ram.isRam(phys, KhoKexecMetadataStruct.size)) throw new KernelError(Errno.EINVAL, `kexec-metadata blob runs outside RAM`);
  const m = KhoKexecMetadataStruct.read(ram, phys);
  return { previousRelease: m.previous_release.slice(0, NEW_UTS_LEN), kexecCount: m.kexec_count };
}

/** Writes a version-1 kexec-metadata blob at `phys`: this kernel's release and its kexec count. */
export function writeKexecMetadata(ram: PhysicalMemory, phys: number, m: KexecMetadata): void {
  KhoKexecMetadataStruct.write(ram, phys, { version: KHO_KEXEC_METADATA_VERSION, previous_release: m.previousRelease, kexec_count: m.kexecCount });
}
