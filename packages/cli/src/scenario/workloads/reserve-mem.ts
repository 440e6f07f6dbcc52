import { injectable } from 'tsyringe';
import { Errno, KernelError, SeededByteStream, hex } from '@kho/kernel';
import { PhysicalMemory } from '@kho/physmem';
import { ReserveMem } from '@kho/memblock';
import { itemSeed, type RegionEntry, type WorkloadCheck, type WorkloadPreserved, type WorkloadState } from './model';
import { CHUNK, Tally, compareBytes, type GenerateRun, type WorkloadStrategy } from './strategy';

/**
 * reserve_mem regions: the command line's regions, filled with seeded bytes (reserve_mem hands them over); in the
 * next kernel each must come back at the same physical address with the same bytes. Regions stay reserve_mem's
 * (nothing to free); a verified region the new generation does not fill again is carried forward unchanged.
 */
@injectable()
export class ReserveMemWorkload implements WorkloadStrategy<WorkloadPreserved['reserveMem'], string[]> {
  /** Regions verified at restore, carried forward when this generation does not fill them again. */
  private carried: RegionEntry[] = [];

  constructor(
    private readonly reserveMem: ReserveMem,
    private readonly ram: PhysicalMemory,
  ) {}

  generate({ config: c, state }: GenerateRun): { preserved: WorkloadPreserved['reserveMem']; made: string[] } {
    const made: string[] = [];
    const filled = new Set(c.reserveMem.map((r) => r.name));
    for (const r of this.carried) if (!filled.has(r.name)) state.regions.push(r);
    for (const spec of c.reserveMem) {
      const region = this.reserveMem.find(spec.name);
      if (region.size !== spec.size) {
        throw new KernelError(Errno.EINVAL, `scenario: reserve_mem region '${spec.name}' has ${region.size} bytes (wanted ${spec.size})`);
      }
      const seed = itemSeed(c.seed, `region:${spec.name}`, c.generation);
      const stream = new SeededByteStream(seed);
      for (let off = 0; off < region.size; off += CHUNK) this.ram.write(region.start + off, stream.next(Math.min(CHUNK, region.size - off)));
      state.regions.push({ name: spec.name, start: region.start, size: BigInt(region.size), seed, writtenBy: c.generation });
      made.push(spec.name);
    }
    const bytes = state.regions.reduce((n, r) => n + Number(r.size), 0);
    return { preserved: { regions: state.regions.length, bytes, carried: state.regions.length - made.length }, made };
  }

  verify(state: WorkloadState): WorkloadCheck {
    const t = new Tally();
    for (const e of state.regions) {
      t.listed++;
      const size = Number(e.size);
      const what = `reserve_mem region '${e.name}' (written by generation ${e.writtenBy})`;
      const region = this.reserveMem.regions.find((x) => x.name === e.name);
      if (!region) {
        t.problems.push(`${what}: this kernel has no such region (its command line lacks reserve_mem=…:${e.name})`);
        continue;
      }
      if (!region.revived) {
        t.problems.push(`${what}: not revived${region.mismatch ? ` (${region.mismatch})` : ''}; a new one was allocated at ${hex(region.start)}`);
        continue;
      }
      if (region.start !== e.start || region.size !== size) {
        t.problems.push(`${what}: at ${hex(region.start)} +${region.size} (the previous kernel's was at ${hex(e.start)} +${size})`);
        continue;
      }
      const stream = new SeededByteStream(e.seed);
      const bad = compareBytes(size, (off, len) => this.ram.read(region.start + off, len), (_off, len) => stream.next(len));
      t.bytes += size;
      if (bad) {
        t.problems.push(`${what}: ${bad}`);
        continue;
      }
      t.verified++;
      this.carried.push({ ...e });
    }
    return t.done();
  }

  free(): number {
    return 0;
  }
}
