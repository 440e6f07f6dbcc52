import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { layoutTable } from '@kho/struct';
import { KHO_DATA_SIZE as IMAGE_KHO_DATA_SIZE } from '@kho/image';
import fc from 'fast-check';
import { KHO_DATA_SIZE, KhoDataStruct, KhoKexecMetadataStruct, KhoScratchStruct, decodeKhoData, decodeScratchArray, encodeKhoData, encodeScratchArray } from './abi';

describe('struct kho_data (golden bytes)', () => {
  it('is 32 little-endian bytes: fdt_addr, fdt_size, scratch_addr, scratch_size', () => {
    const bytes = encodeKhoData({ fdtAddr: 0x1234_5000, fdtSize: 4096, scratchAddr: 0xf200_0000, scratchSize: 48 });
    expect(bytes.length).toBe(KHO_DATA_SIZE);
    expect(Buffer.from(bytes).toString('hex')).toBe(
      '0050341200000000' + '0010000000000000' + '000000f200000000' + '3000000000000000',
    );
    expect(decodeKhoData(bytes)).toEqual({ fdtAddr: 0x1234_5000, fdtSize: 4096, scratchAddr: 0xf200_0000, scratchSize: 48 });
  });

  it('refuses a blob of the wrong size and maps values at or above 2^53 to Infinity', () => {
    expect(decodeKhoData(new Uint8Array(31))).toBe('kho_data is 31 bytes (wanted 32)');
    const b = new Uint8Array(32).fill(0xff);
    expect(decodeKhoData(b)).toEqual({ fdtAddr: Infinity, fdtSize: Infinity, scratchAddr: Infinity, scratchSize: Infinity });
  });

  it('scratch arrays round-trip (16 bytes an entry)', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ addr: fc.nat({ max: 2 ** 40 }), size: fc.nat({ max: 2 ** 36 }) }), { maxLength: 8 }), (areas) => {
        const bytes = encodeScratchArray(areas);
        expect(bytes.length).toBe(areas.length * 16);
        expect(decodeScratchArray(bytes)).toEqual(areas);
      }),
    );
  });
});

describe('docs/abi/kho.md is the contract: its layout tables are the declared layouts', () => {
  const doc = readFileSync(join(__dirname, '../../../docs/abi/kho.md'), 'utf8');
  it.each([KhoDataStruct, KhoScratchStruct, KhoKexecMetadataStruct])('%s', (layout) => {
    expect(doc).toContain(`layout: struct ${layout.name}\n${layoutTable(layout)}\n`);
  });
});

it('the handover image carries kho_data as opaque bytes of exactly this size', () => {
  expect(IMAGE_KHO_DATA_SIZE).toBe(KHO_DATA_SIZE);
});
