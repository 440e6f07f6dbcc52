import { Memmap, PhysicalMemory, pfn, toOrder } from '@kho/physmem';
import { KHO_PAGE_MAGIC } from './abi';
import { clearStamp, hasStamp, stampOrder, writeStamp } from './stamp';

describe('head-page stamp', () => {
  const setup = (): Memmap => new Memmap(new PhysicalMemory({ ranges: [{ start: 0, size: 4 * 2 ** 20, node: 0 }] }));
  const head = pfn(0x200);

  it('writes order | KHO_PAGE_MAGIC << 32 into the private word, reads it back, and clearing consumes it', () => {
    const memmap = setup();
    expect(stampOrder(memmap, head)).toBeUndefined();
    expect(hasStamp(memmap, head, toOrder(0))).toBe(false);

    writeStamp(memmap, head, toOrder(9));
    expect([memmap.privateLo(head), memmap.privateHi(head)]).toEqual([9, KHO_PAGE_MAGIC]);
    expect(stampOrder(memmap, head)).toBe(9);
    expect(hasStamp(memmap, head, toOrder(9))).toBe(true);
    expect(hasStamp(memmap, head, toOrder(8))).toBe(false);
    expect(stampOrder(memmap, pfn(0x201))).toBeUndefined();

    clearStamp(memmap, head);
    expect([memmap.privateLo(head), memmap.privateHi(head)]).toEqual([0, 0]);
    expect(stampOrder(memmap, head)).toBeUndefined();
    expect(hasStamp(memmap, head, toOrder(0))).toBe(false);
  });

  it('does not take a private word without the magic for a stamp, whatever its low half holds', () => {
    const memmap = setup();
    memmap.setPrivate(head, 3, KHO_PAGE_MAGIC + 1);
    expect(stampOrder(memmap, head)).toBeUndefined();
    expect(hasStamp(memmap, head, toOrder(3))).toBe(false);
  });
});
