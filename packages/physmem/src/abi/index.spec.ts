import { Errno, KernelBug, KernelError } from '@kho/kernel';
import { PAGE_SIZE, isPhysAddr, pfn, pfnAdd, pfnToPhys, physToPfn, toOrder, toPhysAddr } from './index';

describe('the brands: where a number becomes an address or an order', () => {
  it('toPhysAddr keeps an integer in [0, 2^53) and refuses anything else with EINVAL naming what it was', () => {
    expect(toPhysAddr(0, 'x')).toBe(0);
    expect(toPhysAddr(0x1234_5000, 'x')).toBe(0x1234_5000);
    expect(toPhysAddr(2 ** 53 - 1, 'x')).toBe(2 ** 53 - 1);
    // unaligned is still an address: alignment is the receiver's check
    expect(toPhysAddr(5, 'x')).toBe(5);
    expect(() => toPhysAddr(Infinity, 'the record')).toThrow(
      new KernelError(Errno.EINVAL, 'the record: a u64 >= 2^53 is not a physical address (wanted an integer in [0, 2^53))'),
    );
    expect(() => toPhysAddr(2 ** 53, 'the record')).toThrow(
      new KernelError(Errno.EINVAL, `the record: ${2 ** 53} is not a physical address (wanted an integer in [0, 2^53))`),
    );
    for (const bad of [-4096, 0.5, NaN]) expect(() => toPhysAddr(bad, 'y')).toThrow(KernelError);
  });

  it('isPhysAddr agrees with toPhysAddr', () => {
    for (const n of [0, 1, 4096, 2 ** 53 - 1]) expect(isPhysAddr(n)).toBe(true);
    for (const n of [-1, 0.5, 2 ** 53, Infinity, NaN]) expect(isPhysAddr(n)).toBe(false);
  });

  it('toOrder refuses a negative or fractional order as a bug (KernelBug), not as bad input', () => {
    expect(toOrder(0)).toBe(0);
    expect(toOrder(51)).toBe(51);
    for (const bad of [-1, 1.5, NaN, Infinity]) expect(() => toOrder(bad)).toThrow(KernelBug);
  });

  it('pfn and address conversions are exact inverses on page boundaries and round down inside a page', () => {
    expect(pfnToPhys(pfn(3))).toBe(3 * PAGE_SIZE);
    expect(physToPfn(toPhysAddr(3 * PAGE_SIZE, 'x'))).toBe(3);
    expect(physToPfn(toPhysAddr(3 * PAGE_SIZE + PAGE_SIZE - 1, 'x'))).toBe(3);
    expect(pfnAdd(pfn(10), 5)).toBe(15);
  });
});
