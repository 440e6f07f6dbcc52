import { injectable } from 'tsyringe';
import { SeededByteStream, describeError } from '@kho/kernel';
import { MEMFD_MAX_FILE_SIZE, Memfd } from '@kho/memfd';
import { WORKLOAD_SPARSE_CHUNK, itemSeed, type WorkloadCheck, type WorkloadPreserved, type WorkloadState } from './model';
import { CHUNK, Tally, compareBytes, freeEach, type GenerateRun, type WorkloadStrategy } from './strategy';

/** The data extents of a memfd file: all of it, or (sparse) the odd WORKLOAD_SPARSE_CHUNK chunks. */
function fileExtents(size: number, sparse: boolean): Array<[number, number]> {
  if (!sparse) return [[0, size]];
  const out: Array<[number, number]> = [];
  for (let off = WORKLOAD_SPARSE_CHUNK; off < size; off += 2 * WORKLOAD_SPARSE_CHUNK) out.push([off, Math.min(WORKLOAD_SPARSE_CHUNK, size - off)]);
  return out;
}

/** The expected contents of a memfd file, chunk by chunk in order: the seeded stream in the extents, zeros in the holes. */
function fileExpectation(size: number, sparse: boolean, seed: number): (off: number, len: number) => Uint8Array {
  const stream = new SeededByteStream(seed);
  const extents = fileExtents(size, sparse);
  return (off, len) => {
    const out = new Uint8Array(len);
    for (const [s, n] of extents) {
      const a = Math.max(s, off);
      const b = Math.min(s + n, off + len);
      if (a < b) stream.fill(out.subarray(a - off, b - off));
    }
    return out;
  };
}

/**
 * memfd files: written with seeded bytes (sparse ones in every other 64 KiB chunk, ending in a hole when the size
 * says so) and preserved through memfd's own handover; verified byte for byte, holes included, then unlinked.
 */
@injectable()
export class MemfdWorkload implements WorkloadStrategy<WorkloadPreserved['memfd'], string[]> {
  private toUnlink: string[] = [];

  constructor(private readonly memfd: Memfd) {}

  generate({ config: c, state, unwind: u }: GenerateRun): { preserved: WorkloadPreserved['memfd']; made: string[] } {
    const made: string[] = [];
    let bytes = 0;
    c.memfd.forEach((spec, i) => {
      const seed = itemSeed(c.seed, `memfd:${spec.name}`, i);
      const fd = this.memfd.create(spec.name);
      let open = true;
      u.push(() => {
        if (open) this.memfd.close(fd);
        this.memfd.unlink(spec.name);
      });
      const stream = new SeededByteStream(seed);
      for (const [start, len] of fileExtents(spec.size, spec.sparse)) {
        for (let off = 0; off < len; off += CHUNK) this.memfd.write(fd, start + off, stream.next(Math.min(CHUNK, len - off)));
      }
      this.memfd.truncate(fd, spec.size); // a sparse file may end in a hole
      this.memfd.preserve(fd);
      this.memfd.close(fd);
      open = false;
      state.files.push({ name: spec.name, size: BigInt(spec.size), sparse: spec.sparse, seed });
      made.push(spec.name);
      bytes += spec.size;
    });
    return { preserved: { files: state.files.length, bytes }, made };
  }

  verify(state: WorkloadState): WorkloadCheck {
    const t = new Tally();
    for (const f of state.files) {
      t.listed++;
      const size = Number(f.size);
      const what = `memfd file '${f.name}'`;
      if (!Number.isSafeInteger(size) || size <= 0 || size > MEMFD_MAX_FILE_SIZE) {
        t.problems.push(`${what}: the state says ${f.size} bytes (wanted 1..${MEMFD_MAX_FILE_SIZE})`);
        continue;
      }
      let fd: number;
      try {
        fd = this.memfd.open(f.name);
      } catch (e) {
        t.problems.push(`${what}: ${describeError(e, { errno: true })}`);
        continue;
      }
      this.toUnlink.push(f.name);
      try {
        const got = this.memfd.size(fd);
        if (got !== size) {
          t.problems.push(`${what}: size ${got} (wanted ${size})`);
          continue;
        }
        const bad = compareBytes(size, (off, len) => this.memfd.read(fd, off, len), fileExpectation(size, f.sparse, f.seed));
        t.bytes += size;
        if (bad) {
          t.problems.push(`${what}${f.sparse ? ' (sparse)' : ''}: ${bad}`);
          continue;
        }
        t.verified++;
      } finally {
        this.memfd.close(fd);
      }
    }
    return t.done();
  }

  free(errors: string[]): number {
    return freeEach(this.toUnlink, (n) => this.memfd.unlink(n), errors);
  }
}
