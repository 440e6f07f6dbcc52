import { injectable } from 'tsyringe';
import { SeededByteStream, crc32c, describeError, hex } from '@kho/kernel';
import { BuddyAllocator, Folio, PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { KState } from '@kho/kstate';
import { WORKLOAD_OBJECTS_MAX, WORKLOAD_PAYLOAD_MAX, WorkloadObjectDesc, itemSeed, type KstateCheck, type WorkloadObject, type WorkloadPreserved, type WorkloadState } from './model';
import { Tally, byte, firstDiff, freeEach, type GenerateRun, type WorkloadStrategy } from './strategy';

/** The expected fields of object `index` of a state written by generation `generation` with seed `seed`. */
function expectedObject(seed: number, generation: number, index: number, size: number): { id: bigint; name: string; tag: Uint8Array; payload: Uint8Array } {
  const stream = new SeededByteStream(itemSeed(seed, 'object', index));
  return { id: (BigInt(generation) << 32n) | BigInt(index), name: `g${generation}-object-${index}`, tag: stream.next(16), payload: stream.next(size) };
}

/** The smallest folio order that holds `size` bytes. */
function orderFor(size: number): number {
  let order = 0;
  while (PAGE_SIZE * 2 ** order < size) order++;
  return order;
}

/**
 * kstate objects: each a kstate section (`scenario_object`, instance = its index) with seeded fields and a payload
 * folio; verified field by field (and the payload byte for byte against its CRC32C), then the folios are put.
 */
@injectable()
export class KstateObjectsWorkload implements WorkloadStrategy<WorkloadPreserved['kstate'], WorkloadObject[], KstateCheck> {
  private toPut: Folio[] = [];

  constructor(
    private readonly kstate: KState,
    private readonly buddy: BuddyAllocator,
    private readonly ram: PhysicalMemory,
  ) {}

  generate({ config: c, state, unwind: u }: GenerateRun): { preserved: WorkloadPreserved['kstate']; made: WorkloadObject[] } {
    const made: WorkloadObject[] = [];
    if (c.kstate) {
      const size = c.kstate.size;
      for (let i = 0; i < c.kstate.objects; i++) {
        const want = expectedObject(c.seed, c.generation, i, size);
        let payload: Folio | null = null;
        if (size > 0) {
          const f = this.buddy.folioAlloc(orderFor(size));
          u.push(() => this.buddy.folioPut(f));
          this.ram.write(f.phys, want.payload);
          payload = f;
        }
        const obj: WorkloadObject = { id: want.id, name: want.name, tag: want.tag, size, csum: crc32c(want.payload), payload };
        this.kstate.register(WorkloadObjectDesc, i, obj);
        u.push(() => this.kstate.unregister(WorkloadObjectDesc, i));
        made.push(obj);
      }
      state.objects = c.kstate.objects;
      state.objectSize = size;
    }
    return { preserved: { objects: state.objects, bytes: state.objects * state.objectSize }, made };
  }

  verify(state: WorkloadState): KstateCheck {
    const t = new Tally();
    let fieldsRestored = 0;
    let fieldsDefaulted = 0;
    const n = state.objects;
    const size = state.objectSize;
    if (n > WORKLOAD_OBJECTS_MAX || size > WORKLOAD_PAYLOAD_MAX) {
      t.problems.push(`kstate objects: the state lists ${n} objects of ${size} bytes (at most ${WORKLOAD_OBJECTS_MAX} of ${WORKLOAD_PAYLOAD_MAX})`);
      return { ...t.done(), fieldsRestored, fieldsDefaulted };
    }
    for (let i = 0; i < n; i++) {
      t.listed++;
      const what = `kstate object ${i}`;
      let obj: WorkloadObject;
      try {
        const r = this.kstate.restore(WorkloadObjectDesc, i);
        fieldsRestored += r.restored.length;
        fieldsDefaulted += r.defaulted.length;
        obj = r.object;
      } catch (e) {
        t.problems.push(`${what}: ${describeError(e, { errno: true })}`);
        continue;
      }
      if (obj.payload) this.toPut.push(obj.payload);
      const want = expectedObject(state.seed, state.generation, i, size);
      const wrong: string[] = [];
      if (obj.id !== want.id) wrong.push(`id ${hex(obj.id)} (wanted ${hex(want.id)})`);
      if (obj.name !== want.name) wrong.push(`name '${obj.name}' (wanted '${want.name}')`);
      if (!(obj.tag instanceof Uint8Array) || firstDiff(obj.tag, want.tag) >= 0) wrong.push('tag differs');
      if (obj.size !== size) wrong.push(`size ${obj.size} (wanted ${size})`);
      const wantCsum = crc32c(want.payload);
      if (obj.csum !== wantCsum) wrong.push(`csum ${hex(obj.csum)} (wanted ${hex(wantCsum)})`);
      if (size === 0 && obj.payload) wrong.push('a payload folio where none was written');
      if (size > 0) {
        if (!obj.payload) wrong.push('no payload folio');
        else if (obj.payload.size < size) wrong.push(`payload folio of ${obj.payload.size} bytes (wanted at least ${size})`);
        else {
          const got = this.ram.read(obj.payload.phys, size);
          t.bytes += size;
          const d = firstDiff(got, want.payload);
          if (d >= 0) wrong.push(`payload byte ${d} is ${byte(got[d])} (wanted ${byte(want.payload[d])})`);
          else if (crc32c(got) !== obj.csum) wrong.push(`payload CRC32C ${hex(crc32c(got))} differs from its csum ${hex(obj.csum)}`);
        }
      }
      if (wrong.length > 0) t.problems.push(`${what}: ${wrong.join(', ')}`);
      else t.verified++;
    }
    return { ...t.done(), fieldsRestored, fieldsDefaulted };
  }

  free(errors: string[]): number {
    return freeEach(this.toPut, (f) => this.buddy.folioPut(f), errors);
  }
}
