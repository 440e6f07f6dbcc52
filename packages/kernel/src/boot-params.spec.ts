import { BootParams, NextBootParams } from './boot-params';
import { Errno, KernelError } from './errno';

describe('BootParams', () => {
  it('has an empty command line and no setup_data by default', () => {
    const p = new BootParams();
    expect(p.cmdline).toBe('');
    expect(p.types).toEqual([]);
    expect(p.setupData(10)).toBeUndefined();
    expect(p.toMap().size).toBe(0);
  });

  it('copies blobs on the way in and on the way out', () => {
    const src = Uint8Array.of(1, 2, 3);
    const p = new BootParams('quiet', new Map([[10, src], [3, Uint8Array.of(9)]]));
    src[0] = 0xff;
    expect(p.cmdline).toBe('quiet');
    expect(p.types).toEqual([10, 3]);
    const out = p.setupData(10)!;
    expect(out).toEqual(Uint8Array.of(1, 2, 3));
    out[1] = 0xff;
    expect(p.setupData(10)).toEqual(Uint8Array.of(1, 2, 3));
    const map = p.toMap();
    expect([...map.keys()]).toEqual([10, 3]);
    map.get(10)![2] = 0xff;
    map.delete(3);
    expect(p.setupData(10)).toEqual(Uint8Array.of(1, 2, 3));
    expect(p.setupData(3)).toEqual(Uint8Array.of(9));
  });
});

describe('NextBootParams', () => {
  it('builds boot parameters from the blobs set, copied, with the given command line', () => {
    const next = new NextBootParams();
    const bytes = Uint8Array.of(7, 7);
    next.setSetupData(10, bytes);
    next.setSetupData(0, Uint8Array.of(0));
    next.setSetupData(0xffffffff, Uint8Array.of(1));
    bytes[0] = 0;
    next.setSetupData(0, Uint8Array.of(5)); // replaces
    const p = next.build('kho=on');
    expect(p.cmdline).toBe('kho=on');
    expect(p.types).toEqual([10, 0, 0xffffffff]);
    expect(p.setupData(10)).toEqual(Uint8Array.of(7, 7));
    expect(p.setupData(0)).toEqual(Uint8Array.of(5));
    // a later change to the builder does not reach what it built
    next.setSetupData(10, Uint8Array.of(1));
    expect(p.setupData(10)).toEqual(Uint8Array.of(7, 7));
  });

  it('clears a blob, and clearing an absent one is harmless', () => {
    const next = new NextBootParams();
    next.setSetupData(10, Uint8Array.of(1));
    next.setSetupData(11, Uint8Array.of(2));
    next.clearSetupData(10);
    next.clearSetupData(99);
    expect(next.build('').types).toEqual([11]);
  });

  it.each([-1, 1.5, 2 ** 32, Number.NaN])('refuses setup_data type %p (not a u32)', (type) => {
    let err: unknown;
    try {
      new NextBootParams().setSetupData(type, Uint8Array.of(1));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).errno).toBe(Errno.EINVAL);
    expect((err as KernelError).message).toBe(`EINVAL: setup_data type ${type} is not a u32`);
  });
});
