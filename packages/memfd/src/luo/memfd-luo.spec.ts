import { Errno } from '@kho/kernel';
import { BuddyAllocator, PAGE_SIZE } from '@kho/physmem';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { layoutTable } from '@kho/struct';
import { checkGolden } from '@kho/struct/testing';
import { KhoVmallocStruct } from '@kho/vmalloc/abi';
import { F_ADD_SEALS, F_GET_SEALS, Liveupdate, errnoOf, luoCreateSession, luoOpenDevice, luoPreserveFd, luoRetrieveFd, luoRetrieveSession, luoSessionFinish } from '@kho/liveupdate';
import {
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MFD_ALLOW_SEALING,
  MFD_HUGETLB,
  MemfdLuoFolioSerStruct,
  MemfdLuoSerStruct,
} from './abi';
import { boot, coldFree, dec, enc, idlePages, kexec, viewOf, type Booted } from './luo-kit';
import { decodeFolioEntries, decodeMemfdLuoRecord } from './memfd-luo';

describe('docs/abi/luo.md is the contract: its memfd-v2 tables are the declared layouts', () => {
  const doc = readFileSync(join(__dirname, '../../../../docs/abi/luo.md'), 'utf8');
  it.each([MemfdLuoSerStruct, KhoVmallocStruct, MemfdLuoFolioSerStruct])('%s', (layout) => {
    expect(doc).toContain(`layout: struct ${layout.name}\n${layoutTable(layout)}\n`);
  });
});

describe('memfd-v2 records (golden bytes of spec section 6.4)', () => {
  it('memfd_luo_ser of a 4096-byte memfd with one folio', () => {
    checkGolden(
      MemfdLuoSerStruct,
      { pos: 0, size: 0x1000, seals: 0, flags: 0, nr_folios: 1, folios: { first: 0x12349000, total_pages: 1, flags: 1, order: 0 } },
      `${'00 '.repeat(8)} 00 10 00 00 00 00 00 00 | 00 00 00 00 | 00 00 00 00 | 01 ${'00 '.repeat(7)} | 00 90 34 12 00 00 00 00 | 01 00 00 00 | 01 00 | 00 00`,
    );
  });

  it('a folio entry: pfn 0x1234b, DIRTY|UPTODATE, index 0 reads 0x003000000001234b', () => {
    checkGolden(MemfdLuoFolioSerStruct, { pfn_flags: { pfn: 0x1234b, flags: 3 }, index: 0 }, `4b 23 01 00 00 00 30 00 | ${'00 '.repeat(8)}`);
    expect(decodeFolioEntries(MemfdLuoFolioSerStruct.encode({ pfn_flags: { pfn: 0x1234b, flags: 3 }, index: 7 }), 1)).toEqual([{ pfn: 0x1234b, flags: 3, index: 7 }]);
  });
});

/** A session 'm' holding memfds made by `make` (each returns an fd), tokens 1, 2, ... */
function preserved(b: Booted, ...make: Array<(b: Booted) => number>): { lu: number; sfd: number; fds: number[] } {
  const lu = luoOpenDevice(b.proc);
  const sfd = luoCreateSession(b.proc, lu, 'm');
  const fds = make.map((m, i) => {
    const fd = m(b);
    luoPreserveFd(b.proc, sfd, fd, i + 1);
    return fd;
  });
  return { lu, sfd, fds };
}

const textFile = (text: string, flags = 0) => (b: Booted) => {
  const fd = b.fs.memfdCreate(b.proc, 'f', flags);
  b.proc.write(fd, enc(text));
  return fd;
};

describe('memfd through LUO', () => {
  it('what is accepted: a memfd yes; a hugetlb memfd no (ENOENT); one memfd through two fds only once (EBUSY)', () => {
    const b = boot();
    const { sfd } = preserved(b);
    const huge = b.fs.memfdCreate(b.proc, 'huge', MFD_HUGETLB);
    expect(errnoOf(() => luoPreserveFd(b.proc, sfd, huge, 1))).toBe(Errno.ENOENT);
    const fd = b.fs.memfdCreate(b.proc, 'x');
    const dup = b.proc.installFile(b.proc.fget(fd));
    luoPreserveFd(b.proc, sfd, fd, 2);
    expect(errnoOf(() => luoPreserveFd(b.proc, sfd, dup, 3))).toBe(Errno.EBUSY);
  });

  it('refuses a seal memfd-v2 does not know (EOPNOTSUPP), undoing everything', () => {
    const b = boot();
    const { sfd } = preserved(b);
    const fd = b.fs.memfdCreate(b.proc, 'x');
    b.fs.inodeOf(b.proc.fget(fd)).seals |= 0x40; // a future seal
    const free = b.k.get(BuddyAllocator).nrFreePages;
    expect(errnoOf(() => luoPreserveFd(b.proc, sfd, fd, 1))).toBe(Errno.EOPNOTSUPP);
    expect(b.k.get(BuddyAllocator).nrFreePages).toBe(free);
    expect(b.fs.inodeOf(b.proc.fget(fd)).frozen).toBe(false);
  });

  it('freezes the size while preserved (EPERM), writes inside it still land; closing the session unfreezes', () => {
    const b = boot();
    const { sfd, fds } = preserved(b, textFile('0123456789'));
    const fd = fds[0];
    expect(errnoOf(() => b.proc.ftruncate(fd, 100))).toBe(Errno.EPERM);
    expect(errnoOf(() => b.proc.pwrite(fd, 8, enc('abc')))).toBe(Errno.EPERM);
    expect(errnoOf(() => b.proc.fallocate(fd, 0, 4096))).toBe(Errno.EPERM);
    b.proc.pwrite(fd, 0, enc('AB'));
    expect(dec(b.proc.pread(fd, 0, 10))).toBe('AB23456789');
    b.proc.close(sfd);
    b.proc.ftruncate(fd, 100);
    expect(b.proc.fsize(fd)).toBe(100);
  });

  it('hands over size, position, seals, holes and bytes; the same folios come back; sealed writes stay EPERM', () => {
    let b = boot();
    const { lu, fds } = preserved(
      b,
      (x) => {
        const fd = x.fs.memfdCreate(x.proc, 'sealed', MFD_ALLOW_SEALING);
        x.proc.write(fd, enc('sealed contents'));
        x.proc.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
        return fd;
      },
      (x) => {
        const fd = x.fs.memfdCreate(x.proc, 'sparse');
        x.proc.ftruncate(fd, 5 * PAGE_SIZE);
        x.proc.pwrite(fd, 3 * PAGE_SIZE + 5, enc('in the middle'));
        x.proc.lseek(fd, 1234);
        return fd;
      },
    );
    const pfnsBefore = [...b.fs.inodeOf(b.proc.fget(fds[1])).folios.values()].map((f) => f.pfn).sort();
    expect(pfnsBefore.length).toBe(5); // the holes were filled when it was preserved
    b.proc.lseek(fds[1], 4321); // freeze records the position at the kexec
    b.proc.close(lu);
    b = kexec(b);
    const sfd = luoRetrieveSession(b.proc, luoOpenDevice(b.proc), 'm');
    const sealed = luoRetrieveFd(b.proc, sfd, 1);
    const sparse = luoRetrieveFd(b.proc, sfd, 2);
    expect(dec(b.proc.pread(sealed, 0, 100))).toBe('sealed contents');
    expect(b.proc.fcntl(sealed, F_GET_SEALS)).toBe(F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    expect(errnoOf(() => b.proc.pwrite(sealed, 0, enc('x')))).toBe(Errno.EPERM);
    expect(b.proc.fsize(sparse)).toBe(5 * PAGE_SIZE);
    expect(b.proc.lseek(sparse, 0, 1)).toBe(4321);
    const all = b.proc.pread(sparse, 0, 5 * PAGE_SIZE);
    const want = new Uint8Array(5 * PAGE_SIZE);
    want.set(enc('in the middle'), 3 * PAGE_SIZE + 5);
    expect(Buffer.from(all).equals(Buffer.from(want))).toBe(true);
    expect([...b.fs.inodeOf(b.proc.fget(sparse)).folios.values()].map((f) => f.pfn).sort()).toEqual(pfnsBefore);
    luoSessionFinish(b.proc, sfd);
    // a restored file is an ordinary memfd again: its size can change
    b.proc.pwrite(sparse, 5 * PAGE_SIZE, enc('grows'));
  });

  it('2 MiB folios (transparent_hugepage_shmem=always) come back as 2 MiB folios, and free the ordinary way', () => {
    const cmdline = 'liveupdate=on transparent_hugepage_shmem=always';
    let b = boot(cmdline, '1G');
    const { lu } = preserved(b, (x) => {
      const fd = x.fs.memfdCreate(x.proc, 'guest');
      x.proc.ftruncate(fd, 8 * 2 ** 20);
      x.proc.pwrite(fd, 2 ** 21 + 7, enc('second folio'));
      return fd;
    });
    b.proc.close(lu);
    b = kexec(b);
    const sfd = luoRetrieveSession(b.proc, luoOpenDevice(b.proc), 'm');
    const fd = luoRetrieveFd(b.proc, sfd, 1);
    const file = b.proc.fget(fd);
    const inode = b.fs.inodeOf(file);
    file.put();
    expect([...inode.folios.values()].map((f) => f.order)).toEqual([9, 9, 9, 9]);
    expect(dec(b.proc.pread(fd, 2 ** 21 + 7, 12))).toBe('second folio');
    luoSessionFinish(b.proc, sfd);
    b.proc.exit();
    b.k.restore();
    expect(b.k.finish().plugins.kho.report?.unrestoredBlocks).toBe(0);
    expect(idlePages(b.k)).toBe(coldFree(b.machine, cmdline));
  });

  it('a 2 MiB folio reaching past the end of a 64 KiB file comes back (only its pages inside the size count)', () => {
    const cmdline = 'liveupdate=on transparent_hugepage_shmem=always';
    let b = boot(cmdline, '1G');
    const { lu } = preserved(b, (x) => {
      const fd = x.fs.memfdCreate(x.proc, 'small');
      x.proc.ftruncate(fd, 16 * PAGE_SIZE);
      x.proc.pwrite(fd, 5, enc('inside'));
      return fd;
    });
    b.proc.close(lu);
    b = kexec(b);
    const sfd = luoRetrieveSession(b.proc, luoOpenDevice(b.proc), 'm');
    const fd = luoRetrieveFd(b.proc, sfd, 1);
    expect([b.proc.fsize(fd), dec(b.proc.pread(fd, 5, 6))]).toEqual([16 * PAGE_SIZE, 'inside']);
    const file = b.proc.fget(fd);
    expect([...b.fs.inodeOf(file).folios.values()].map((f) => f.order)).toEqual([9]);
    file.put();
    luoSessionFinish(b.proc, sfd);
    b.proc.exit();
  });

  it('finishing a session whose memfds were never retrieved gives their folios back', () => {
    let b = boot();
    const { lu } = preserved(b, textFile('x'.repeat(3 * PAGE_SIZE)));
    b.proc.close(lu);
    b = kexec(b);
    const sfd = luoRetrieveSession(b.proc, luoOpenDevice(b.proc), 'm');
    luoSessionFinish(b.proc, sfd);
    b.proc.exit();
    b.k.restore();
    expect(b.k.finish().plugins.kho.report?.unrestoredBlocks).toBe(0);
    expect(idlePages(b.k)).toBe(coldFree(b.machine, 'liveupdate=on'));
  });
});

describe('decodeMemfdLuoRecord (for inspectors)', () => {
  it('lists the record and every folio, as the handler wrote them', () => {
    const b = boot('liveupdate=on transparent_hugepage_shmem=always', '1G');
    const { fds } = preserved(b, (x) => {
      const fd = x.fs.memfdCreate(x.proc, 'g');
      x.proc.ftruncate(fd, 6 * 2 ** 20);
      return fd;
    });
    const rec = Number(b.luo.status().outgoing[0].files[0].data);
    const d = decodeMemfdLuoRecord(b.ram, rec);
    const f = b.proc.fget(fds[0]);
    const pfns = [...b.fs.inodeOf(f).folios.entries()].sort((x, y) => x[0] - y[0]).map(([i, folio]) => ({ pfn: `0x${folio.pfn.toString(16)}`, index: i, flags: 3 }));
    f.put();
    expect(d).toMatchObject({ pos: 0, size: 6 * 2 ** 20, seals: 1, flags: 0, nrFolios: 3, folios: pfns });
    expect(d.error).toBeUndefined();
    b.ram.writeU64(Number(d.array.first), Number(d.array.first)); // the chunk links to itself
    expect(() => decodeMemfdLuoRecord(b.ram, rec)).not.toThrow();
  });
});

describe('a damaged memfd record: that RETRIEVE_FD fails, nothing unpreserved is restored, the rest is fine', () => {
  /** Two memfds (tokens 1 and 2) handed over; returns the next kernel before anything is retrieved and file 1's record. */
  function handover(): { b: Booted; rec: number } {
    const b = boot();
    const { lu } = preserved(b, textFile('one'.repeat(2000)), textFile('two'));
    b.k.prepare();
    b.k.serialize();
    const rec = b.luo.status().outgoing[0].files.find((f) => f.token === '0x1')!.data;
    b.proc.close(lu);
    return { b, rec: Number(rec) };
  }

  function firstEntry(b: Booted, rec: number): number {
    // the array's first chunk lists its page; the first entry is at the start of that page
    const first = MemfdLuoSerStruct.read(b.ram, rec).folios.first;
    return b.ram.readU64(first + 8);
  }

  it.each<[string, (b: Booted, rec: number) => void, Errno, RegExp]>([
    ['a folio outside RAM', (b, rec) => b.ram.writeU64(firstEntry(b, rec), (1n << 28n) | (3n << 52n)), Errno.EIO, /folio entry 0 \(pfn 0x10000000, index 0\): restoreFolio\(0x10000000000\): the address is not RAM/],
    ['a folio that was never preserved', (b, rec) => b.ram.writeU64(firstEntry(b, rec), 0x100n | (3n << 52n)), Errno.EIO, /folio entry 0 \(pfn 0x100, index 0\): restoreFolio\(0x100000\): no KHO stamp/],
    ['a folio past the end of the file', (b, rec) => b.ram.writeU64(firstEntry(b, rec) + 8, 99), Errno.EIO, /index 99 is past the file's 2 pages/],
    ['a damaged array descriptor', (b, rec) => b.ram.writeU32(rec + 40, 7), Errno.EINVAL, /the folio array cannot be restored/],
    ['an unknown seal', (b, rec) => b.ram.writeU32(rec + 16, 0x80), Errno.EOPNOTSUPP, /seals 0x80/],
    ['non-zero flags', (b, rec) => b.ram.writeU32(rec + 20, 1), Errno.EINVAL, /flags 0x1 \(wanted 0\)/],
    // kho fuzz found these: a memfd of the wrong size with no error said, and a RangeError reading a huge one
    ['a size its folios do not cover', (b, rec) => b.ram.writeU64(rec + 8, 185016320), Errno.EINVAL, /its folios hold 2 pages of the file but its size of 185016320 bytes needs 45170 \(wanted every page of the file preserved\)$/],
    ['a size of 2^50 bytes', (b, rec) => b.ram.writeU64(rec + 8, 2 ** 50), Errno.EINVAL, /size 1125899906842624 bytes is past the 4294967295 pages a memfd-v2 file holds$/],
    ['a size beyond 2^53', (b, rec) => b.ram.writeU64(rec + 8, 2n ** 63n), Errno.EINVAL, /size >= 2\^53 bytes is past the 4294967295 pages/],
    ['a size of 0 with folios', (b, rec) => b.ram.writeU64(rec + 8, 0), Errno.EIO, /index 0 is past the file's 0 pages/],
  ])('%s', (_what, damage, errno, why) => {
    const { b: old, rec } = handover();
    damage(old, rec);
    const b = viewAfter(old);
    const sfd = luoRetrieveSession(b.proc, luoOpenDevice(b.proc), 'm');
    let message = '';
    try {
      luoRetrieveFd(b.proc, sfd, 1);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(why);
    expect(errnoOf(() => luoRetrieveFd(b.proc, sfd, 1))).toBe(errno);
    expect(dec(b.proc.pread(luoRetrieveFd(b.proc, sfd, 2), 0, 3))).toBe('two');
    luoSessionFinish(b.proc, sfd);
  });

  it('a record handle outside RAM is EINVAL', () => {
    const { b: old } = handover();
    const st = old.luo.status();
    expect(st.frozen).toBe(true);
    // rewrite the file record's data field in the handover: find it through the live LUO state
    const ser = old.luo.outgoingRoot;
    const fileBlock = old.ram.readU64(old.ram.readU64(ser + 16) + 16 + 64);
    old.ram.writeU64(fileBlock + 16 + 48, 2 ** 40);
    const b = viewAfter(old);
    const sfd = luoRetrieveSession(b.proc, luoOpenDevice(b.proc), 'm');
    expect(errnoOf(() => luoRetrieveFd(b.proc, sfd, 1))).toBe(Errno.EINVAL);
    expect(b.k.get(Liveupdate).status().incoming[0].files[0].retrieveStatus).toBe(-Errno.EINVAL);
  });
});

function viewAfter(old: Booted): Booted {
  return viewOf(old.machine, old.k.kexec());
}
