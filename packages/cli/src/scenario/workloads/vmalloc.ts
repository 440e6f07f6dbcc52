import { injectable } from 'tsyringe';
import { SeededByteStream, formatBytes } from '@kho/kernel';
import { VMALLOC_HUGE_ORDER, Vmalloc } from '@kho/vmalloc';
import { itemSeed, type WorkloadCheck, type WorkloadPreserved, type WorkloadState } from './model';
import { CHUNK, Tally, compareBytes, freeEach, type GenerateRun, type WorkloadStrategy } from './strategy';

/**
 * vmalloc areas: each filled with its seed's bytes and handed over as a kstate `vmallocBuf` field of the state
 * (kstate maps it anew in the next kernel); verified byte for byte and by its block order, then vfree'd.
 */
@injectable()
export class VmallocWorkload implements WorkloadStrategy<WorkloadPreserved['vmalloc'], number[]> {
  private toVfree: number[] = [];

  constructor(private readonly vm: Vmalloc) {}

  generate({ config: c, state, unwind: u }: GenerateRun): { preserved: WorkloadPreserved['vmalloc']; made: number[] } {
    const made: number[] = [];
    let bytes = 0;
    c.vmalloc.forEach((spec, i) => {
      const seed = itemSeed(c.seed, 'vmalloc', i);
      const addr = this.vm.vmalloc(spec.size, { huge: spec.huge });
      u.push(() => this.vm.vfree(addr));
      const stream = new SeededByteStream(seed);
      for (let off = 0; off < spec.size; off += CHUNK) this.vm.write(addr + off, stream.next(Math.min(CHUNK, spec.size - off)));
      state.vmalloc.push({ seed, size: BigInt(spec.size), huge: spec.huge, buf: addr });
      made.push(addr);
      bytes += spec.size;
    });
    return { preserved: { areas: state.vmalloc.length, bytes }, made };
  }

  verify(state: WorkloadState): WorkloadCheck {
    // kstate mapped every vmalloc buffer anew: they are ours to free, whatever the checks find
    for (const v of state.vmalloc) if (v.buf) this.toVfree.push(v.buf);
    const t = new Tally();
    state.vmalloc.forEach((v, i) => {
      t.listed++;
      const size = Number(v.size);
      const what = `vmalloc area ${i} (${formatBytes(size)}${v.huge ? ', huge' : ''})`;
      const area = v.buf ? this.vm.findVmArea(v.buf) : undefined;
      if (!area || area.addr !== v.buf) return void t.problems.push(`${what}: did not come back`);
      if (!Number.isSafeInteger(size) || size <= 0 || size > area.size) return void t.problems.push(`${what}: the state says ${v.size} bytes, the area maps ${area.size}`);
      const order = v.huge ? VMALLOC_HUGE_ORDER : 0;
      if (area.order !== order) return void t.problems.push(`${what}: mapped with blocks of order ${area.order} (wanted ${order})`);
      const stream = new SeededByteStream(v.seed);
      const bad = compareBytes(size, (off, len) => this.vm.read(v.buf + off, len), (_off, len) => stream.next(len));
      t.bytes += size;
      if (bad) return void t.problems.push(`${what}: ${bad}`);
      t.verified++;
    });
    return t.done();
  }

  free(errors: string[]): number {
    return freeEach(this.toVfree, (a) => this.vm.vfree(a), errors);
  }
}
