import fc from 'fast-check';
import { Errno, KernelError, type Kernel, type KernelModule } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, PAGE_SIZE, createMachine, physmemModule } from '@kho/physmem';
import { Kho, khoModule } from '@kho/kho-core';
import { memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { MEMFD_MAX_FILES, MEMFD_MAX_FILE_SIZE } from './abi';
import { Memfd } from './memfd';
import { memfdModule } from './memfd.plugin';
import { bytesOf, firstDifference } from './testing/bytes';

const MiB = 2 ** 20;

function image(): KernelModule[] {
  return [physmemModule({ handOffAllRam: false }), memblockModule(), radixTrackerModule(), khoModule(), memfdModule()];
}

function boot(): { kernel: Kernel; memfd: Memfd; buddy: BuddyAllocator } {
  const kernel = createMachine({ mem: '512M' }).boot({ image: image() });
  return { kernel, memfd: kernel.get(Memfd), buddy: kernel.get(BuddyAllocator) };
}

describe('Memfd: files', () => {
  it('writes and reads at any offset; holes read as zero; the file grows to what was written', () => {
    const { memfd } = boot();
    const fd = memfd.create('a');
    expect(memfd.write(fd, 0, new TextEncoder().encode('hello'))).toBe(5);
    const far = bytesOf(1, 3 * PAGE_SIZE);
    memfd.write(fd, 3 * MiB + 5, far);
    expect(memfd.size(fd)).toBe(3 * MiB + 5 + far.length);
    expect(new TextDecoder().decode(memfd.read(fd, 0, 5))).toBe('hello');
    expect(firstDifference(memfd.read(fd, 5, 3 * MiB), new Uint8Array(3 * MiB))).toBe(-1);
    expect(firstDifference(memfd.read(fd, 3 * MiB + 5, far.length), far)).toBe(-1);
    expect(memfd.read(fd, memfd.size(fd) - 2, 100)).toEqual(far.subarray(far.length - 2));
    expect(memfd.read(fd, memfd.size(fd), 100)).toEqual(new Uint8Array(0));
    expect(memfd.read(fd, 10 * MiB, 1)).toEqual(new Uint8Array(0));
    expect(memfd.write(fd, 10 * MiB, new Uint8Array(0))).toBe(0);
    expect(memfd.size(fd)).toBe(3 * MiB + 5 + far.length); // an empty write does not grow the file
  });

  it('allocates the largest aligned folio that lies inside the write and is free (orders 0..9)', () => {
    const { memfd } = boot();
    const fd = memfd.create('a');
    memfd.write(fd, 0, new Uint8Array(1)); // page 0: order 0
    memfd.write(fd, PAGE_SIZE, new Uint8Array(7 * PAGE_SIZE)); // pages 1..7: orders 0 (1), 1 (2-3), 2 (4-7)
    memfd.write(fd, 4 * MiB, new Uint8Array(5 * MiB)); // pages 1024..2303: orders 9 (twice), 8
    memfd.write(fd, 2 * MiB - 100, new Uint8Array(200)); // straddles pages 511 and 512: two order-0 folios
    const folios = memfd.preservedFiles().length; // nothing preserved yet
    expect(folios).toBe(0);
    memfd.preserve(fd);
    const view = memfd.preservedFiles()[0];
    expect(view.folios.map(({ offset, folio }) => [offset / PAGE_SIZE, folio.order])).toEqual([
      [0, 0],
      [1, 0],
      [2, 1],
      [4, 2],
      [511, 0],
      [512, 0],
      [1024, 9],
      [1536, 9],
      [2048, 8],
    ]);
    expect(memfd.stat('a')).toEqual({ name: 'a', size: 9 * MiB, folios: 9, pages: 8 + 2 + 1280, preserved: true, openFds: 1 });
  });

  it('behaves like a byte array under any sequence of writes, truncates and reads (model check)', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('write' as const), offset: fc.nat({ max: 300_000 }), len: fc.nat({ max: 20_000 }), seed: fc.integer() }),
      fc.record({ kind: fc.constant('truncate' as const), size: fc.nat({ max: 320_000 }) }),
      fc.record({ kind: fc.constant('read' as const), offset: fc.nat({ max: 330_000 }), len: fc.nat({ max: 40_000 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 25 }), (ops) => {
        const { memfd, buddy } = boot();
        const free0 = buddy.nrFreePages;
        const name = 'model';
        const fd = memfd.create(name);
        let model = new Uint8Array(0);
        for (const o of ops) {
          if (o.kind === 'write') {
            const data = bytesOf(o.seed, o.len);
            memfd.write(fd, o.offset, data);
            if (o.len > 0) {
              if (o.offset + o.len > model.length) {
                const grown = new Uint8Array(o.offset + o.len);
                grown.set(model);
                model = grown;
              }
              model.set(data, o.offset);
            }
          } else if (o.kind === 'truncate') {
            memfd.truncate(fd, o.size);
            const next = new Uint8Array(o.size);
            next.set(model.subarray(0, Math.min(o.size, model.length)));
            model = next;
          } else {
            expect(firstDifference(memfd.read(fd, o.offset, o.len), model.subarray(o.offset, o.offset + o.len))).toBe(-1);
          }
          expect(memfd.size(fd)).toBe(model.length);
        }
        expect(firstDifference(memfd.read(fd, 0, model.length), model)).toBe(-1);
        memfd.unlink(name);
        memfd.close(fd);
        expect(buddy.nrFreePages).toBe(free0);
      }),
      { numRuns: 40 },
    );
  });

  it('truncate frees the folios past the new end and zeroes the rest of the one it cuts', () => {
    const { memfd, buddy } = boot();
    const free0 = buddy.nrFreePages;
    const fd = memfd.create('t');
    memfd.write(fd, 0, bytesOf(7, 4 * MiB)); // two order-9 folios
    expect(buddy.nrFreePages).toBe(free0 - 1024);
    memfd.truncate(fd, MiB + 1);
    expect(memfd.stat('t')).toMatchObject({ size: MiB + 1, folios: 1, pages: 512 });
    expect(buddy.nrFreePages).toBe(free0 - 512);
    memfd.truncate(fd, 3 * MiB);
    const back = memfd.read(fd, 0, 3 * MiB);
    expect(firstDifference(back.subarray(0, MiB + 1), bytesOf(7, MiB + 1))).toBe(-1);
    expect(firstDifference(back.subarray(MiB + 1), new Uint8Array(2 * MiB - 1))).toBe(-1);
    memfd.truncate(fd, 0);
    expect(memfd.stat('t')).toMatchObject({ size: 0, folios: 0, pages: 0 });
    expect(buddy.nrFreePages).toBe(free0);
  });

  it('keeps an unlinked file while a descriptor is open, frees it at the last close, and reuses the lowest descriptor', () => {
    const { memfd, buddy } = boot();
    const free0 = buddy.nrFreePages;
    const fd0 = memfd.create('x');
    const fd1 = memfd.open('x');
    expect([fd0, fd1]).toEqual([0, 1]);
    memfd.write(fd0, 0, bytesOf(3, 10_000));
    memfd.unlink('x');
    expect(() => memfd.open('x')).toThrow(new KernelError(Errno.ENOENT, "open: no file named 'x'"));
    expect(firstDifference(memfd.read(fd1, 0, 10_000), bytesOf(3, 10_000))).toBe(-1);
    const other = memfd.create('x'); // the name is free again: a new, empty file
    expect(other).toBe(2);
    expect(memfd.size(other)).toBe(0);
    memfd.close(fd0);
    expect(memfd.usedPages).toBe(3);
    memfd.close(fd1);
    expect(memfd.usedPages).toBe(0);
    expect(buddy.nrFreePages).toBe(free0);
    expect(memfd.create('y')).toBe(0);
    expect(memfd.list().map((s) => [s.name, s.openFds])).toEqual([
      ['x', 1],
      ['y', 1],
    ]);
  });

  it('allocates its folios outside KHO scratch (they are not movable)', () => {
    const { kernel, memfd } = boot();
    const scratch = kernel.get(Kho).scratchAreas();
    expect(scratch.length).toBeGreaterThan(0);
    const fd = memfd.create('s');
    for (let i = 0; i < 64; i++) memfd.write(fd, i * 3 * PAGE_SIZE, new Uint8Array(PAGE_SIZE + 1));
    memfd.preserve(fd);
    for (const { folio } of memfd.preservedFiles()[0].folios) {
      for (const a of scratch) expect(folio.phys + folio.size <= a.addr || folio.phys >= a.addr + a.size).toBe(true);
    }
  });

  it('a write that cannot get a folio changes nothing', () => {
    const { kernel, memfd, buddy } = boot();
    const fd = memfd.create('f');
    memfd.write(fd, 0, bytesOf(1, 100));
    const free0 = buddy.nrFreePages;
    kernel.get(FaultInjector).configure({ failNth: 3 });
    expect(() => memfd.write(fd, PAGE_SIZE, bytesOf(2, 4 * PAGE_SIZE))).toThrow(/^ENOMEM: allocPages: injected failure of an order-0 allocation/);
    kernel.get(FaultInjector).reset();
    expect(buddy.nrFreePages).toBe(free0);
    expect(memfd.stat('f')).toMatchObject({ size: 100, folios: 1, pages: 1 });
    expect(memfd.read(fd, 0, 200)).toEqual(bytesOf(1, 100));
  });

  it.each<[string, (m: Memfd, fd: number) => unknown, KernelError]>([
    ['an empty name', (m) => m.create(''), new KernelError(Errno.EINVAL, "create: name '' is 0 bytes (wanted 1..63)")],
    ['a name of 64 bytes', (m) => m.create('é'.repeat(32)), new KernelError(Errno.EINVAL, `create: name '${'é'.repeat(32)}' is 64 bytes (wanted 1..63)`)],
    ["a name with '/'", (m) => m.create('a/b'), new KernelError(Errno.EINVAL, `create: name "a/b" contains '/' or NUL`)],
    ['a name with NUL', (m) => m.create('a\0'), new KernelError(Errno.EINVAL, `create: name "a\\u0000" contains '/' or NUL`)],
    ['a name that is not Unicode', (m) => m.create('a\ud800'), new KernelError(Errno.EINVAL, `create: name "a\\ud800" is not valid Unicode`)],
    ['a name taken', (m) => m.create('taken'), new KernelError(Errno.EEXIST, "create: a file named 'taken' exists")],
    ['open of no file', (m) => m.open('nope'), new KernelError(Errno.ENOENT, "open: no file named 'nope'")],
    ['unlink of no file', (m) => m.unlink('nope'), new KernelError(Errno.ENOENT, "unlink: no file named 'nope'")],
    ['stat of no file', (m) => m.stat('nope'), new KernelError(Errno.ENOENT, "stat: no file named 'nope'")],
    ['a descriptor not open', (m) => m.write(7, 0, new Uint8Array(1)), new KernelError(Errno.EINVAL, 'write: fd 7 is not open')],
    ['a closed descriptor', (m, fd) => (m.close(fd), m.read(fd, 0, 1)), new KernelError(Errno.EINVAL, 'read: fd 0 is not open')],
    ['a negative offset', (m, fd) => m.write(fd, -1, new Uint8Array(1)), new KernelError(Errno.EINVAL, 'write: offset -1 (wanted a non-negative integer)')],
    ['a fractional offset', (m, fd) => m.read(fd, 0.5, 1), new KernelError(Errno.EINVAL, 'read: offset 0.5 (wanted a non-negative integer)')],
    ['a negative length', (m, fd) => m.read(fd, 0, -1), new KernelError(Errno.EINVAL, 'read: length -1 (wanted a non-negative integer)')],
    ['a write past 1 GiB', (m, fd) => m.write(fd, MEMFD_MAX_FILE_SIZE, new Uint8Array(1)), new KernelError(Errno.E2BIG, "write: file 'taken' would grow to 1073741825 bytes (at most 1073741824)")],
    ['a truncate past 1 GiB', (m, fd) => m.truncate(fd, MEMFD_MAX_FILE_SIZE + 1), new KernelError(Errno.E2BIG, 'truncate: size 1073741825 (at most 1073741824)')],
    ['a truncate to NaN', (m, fd) => m.truncate(fd, NaN), new KernelError(Errno.EINVAL, 'truncate: size NaN (wanted a non-negative integer)')],
    ['preserving an unlinked file', (m, fd) => (m.unlink('taken'), m.preserve(fd)), new KernelError(Errno.ENOENT, "preserve: file 'taken' was unlinked")],
  ])('refuses %s', (_what, call, error) => {
    const { memfd, buddy } = boot();
    const fd = memfd.create('taken');
    const free0 = buddy.nrFreePages;
    expect(() => call(memfd, fd)).toThrow(error);
    expect(buddy.nrFreePages).toBe(free0);
  });

  it(`refuses a file beyond ${MEMFD_MAX_FILES} (ENOSPC), counting unlinked files still open`, () => {
    const { memfd } = boot();
    for (let i = 0; i < MEMFD_MAX_FILES; i++) memfd.create(`f${i}`);
    memfd.unlink('f0'); // still open: it still counts
    expect(() => memfd.create('one-more')).toThrow(new KernelError(Errno.ENOSPC, 'create: 256 files exist (at most 256)'));
    memfd.close(0);
    expect(memfd.create('one-more')).toBe(0);
  });
});
