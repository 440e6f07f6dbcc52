import { describeError, seededBytes, type Kernel } from '@kho/kernel';
import { Memfd } from '@kho/memfd';

/** The demo's memfd files: a dense one, a sparse one with holes, and a small text log. */
export const DEMO_FILES = [
  { name: 'dense.bin', extents: [[0, 3 * 2 ** 20 + 123]] },
  { name: 'sparse.bin', extents: [[5000, 70_000], [8 * 2 ** 20, 4096], [13 * 2 ** 20 + 17, 200_000]] },
  { name: 'boot.log', extents: [[0, 1000]] },
] as const;

/** The bytes of one extent: the stream of a seed derived from the demo's seed, the file name and the offset. */
function bytesFor(seed: number, name: string, offset: number, len: number): Uint8Array {
  let s = seed;
  for (const c of `${name}@${offset}`) s = (s * 31 + c.charCodeAt(0)) >>> 0;
  return seededBytes(s, len);
}

/** Creates the demo files with seeded contents in `kernel` and marks them for preservation. Returns bytes written. */
export function writeDemoFiles(kernel: Kernel, seed: number): number {
  const m = kernel.get(Memfd);
  let bytes = 0;
  for (const f of DEMO_FILES) {
    const fd = m.create(f.name);
    for (const [off, len] of f.extents) bytes += m.write(fd, off, bytesFor(seed, f.name, off, len));
    m.preserve(fd);
    m.close(fd);
  }
  return bytes;
}

/** What the next kernel found of the demo files. */
export interface DemoFilesCheck {
  readonly files: number;
  readonly bytes: number;
  readonly verified: boolean;
  readonly problems: string[];
}

/**
 * Checks every demo file in `kernel` (the next kernel, after restore): same size, the written extents byte for
 * byte, zeros in the holes; then unlinks them all, so their folios go back to the allocator.
 */
export function verifyDemoFiles(kernel: Kernel, seed: number): DemoFilesCheck {
  const m = kernel.get(Memfd);
  const problems: string[] = [];
  let bytes = 0;
  let files = 0;
  for (const f of DEMO_FILES) {
    let fd: number;
    try {
      fd = m.open(f.name);
    } catch (e) {
      problems.push(`${f.name}: ${describeError(e, { errno: true })}`);
      continue;
    }
    files++;
    const size = Math.max(...f.extents.map(([o, l]) => o + l));
    if (m.size(fd) !== size) problems.push(`${f.name}: size ${m.size(fd)} (wanted ${size})`);
    const got = m.read(fd, 0, size);
    const want = new Uint8Array(size);
    for (const [off, len] of f.extents) want.set(bytesFor(seed, f.name, off, len), off);
    if (Buffer.compare(got, want) !== 0) {
      const bad = want.findIndex((b, i) => got[i] !== b);
      problems.push(`${f.name}: byte ${bad} is ${got[bad]} (wanted ${want[bad]})`);
    }
    bytes += size;
    m.close(fd);
    m.unlink(f.name);
  }
  return { files, bytes, verified: problems.length === 0 && files === DEMO_FILES.length, problems };
}
