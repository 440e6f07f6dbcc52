import { checkGolden } from '@kho/struct/testing';
import {
  FDT_HEADER,
  FDT_HEADER_SIZE,
  FDT_MAGIC,
  FDT_PROP_HEADER_SIZE,
  FDT_RESERVE_ENTRY_SIZE,
  FdtHeaderStruct,
  FdtPropHeaderStruct,
  FdtReserveEntryStruct,
} from './abi';
import { encodeFdt } from './encode';
import { FdtNode } from './node';

describe('the DTB layouts, declared once with @kho/struct (big-endian)', () => {
  it('have the sizes of the Devicetree Specification', () => {
    expect([FdtHeaderStruct.size, FdtReserveEntryStruct.size, FdtPropHeaderStruct.size]).toEqual([40, 16, 8]);
    expect([FDT_HEADER_SIZE, FDT_RESERVE_ENTRY_SIZE, FDT_PROP_HEADER_SIZE]).toEqual([40, 16, 8]);
    expect(FDT_HEADER.size_dt_struct).toEqual({ offset: 36, size: 4 });
  });

  it('struct fdt_header: golden bytes', () => {
    checkGolden(
      FdtHeaderStruct,
      {
        magic: FDT_MAGIC,
        totalsize: 0x1000,
        off_dt_struct: 0x38,
        off_dt_strings: 0x90,
        off_mem_rsvmap: 0x28,
        version: 17,
        last_comp_version: 16,
        boot_cpuid_phys: 3,
        size_dt_strings: 0x1f,
        size_dt_struct: 0x58,
      },
      `d0 0d fe ed | 00 00 10 00 | 00 00 00 38 | 00 00 00 90 | 00 00 00 28
       00 00 00 11 | 00 00 00 10 | 00 00 00 03 | 00 00 00 1f | 00 00 00 58`,
    );
  });

  it('struct fdt_reserve_entry and struct fdt_property: golden bytes', () => {
    checkGolden(FdtReserveEntryStruct, { address: 0x1_2345_6000, size: 0x20_0000 }, '00 00 00 01 23 45 60 00 | 00 00 00 00 00 20 00 00');
    checkGolden(FdtPropHeaderStruct, { len: 8, nameoff: 0x1b }, '00 00 00 08 | 00 00 00 1b');
  });

  it('encodeFdt writes a header the declaration reads back, an empty reservation map and property headers', () => {
    const root = new FdtNode('');
    root.setString('compatible', 'kho-v3');
    const blob = encodeFdt(root, { totalSize: 4096, bootCpuid: 3 });
    const h = FdtHeaderStruct.decode(blob);
    expect(h).toMatchObject({ magic: FDT_MAGIC, totalsize: 4096, version: 17, last_comp_version: 16, boot_cpuid_phys: 3 });
    expect(h.size_dt_strings).toBe('compatible'.length + 1);
    expect(FdtReserveEntryStruct.decode(blob, h.off_mem_rsvmap)).toEqual({ address: 0, size: 0 });
    // FDT_BEGIN_NODE, the root's empty name padded to 4, FDT_PROP, then the property header.
    expect(FdtPropHeaderStruct.decode(blob, h.off_dt_struct + 12)).toEqual({ len: 'kho-v3'.length + 1, nameoff: 0 });
  });
});
