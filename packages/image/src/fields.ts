import { KernelBug } from '@kho/kernel';
import { ElfField } from './abi';

/** Writes the little-endian integer field `f` of the struct at `base`. u64 values are numbers below 2^53. */
export function putField(view: DataView, base: number, f: ElfField, value: number): void {
  const at = base + f.offset;
  if (f.size === 1) view.setUint8(at, value);
  else if (f.size === 2) view.setUint16(at, value, true);
  else if (f.size === 4) view.setUint32(at, value, true);
  else if (f.size === 8) view.setBigUint64(at, BigInt(value), true);
  else throw new KernelBug(`a field of ${f.size} bytes is not an integer field`);
}

/** Reads the little-endian u8, u16 or u32 field `f` of the struct at `base`. */
export function getField(view: DataView, base: number, f: ElfField): number {
  const at = base + f.offset;
  if (f.size === 1) return view.getUint8(at);
  if (f.size === 2) return view.getUint16(at, true);
  if (f.size === 4) return view.getUint32(at, true);
  throw new KernelBug(`getField: a field of ${f.size} bytes is not a u8, u16 or u32`);
}

/** Reads the little-endian u64 field `f` of the struct at `base`. */
export function getField64(view: DataView, base: number, f: ElfField): bigint {
  if (f.size !== 8) throw new KernelBug(`getField64: a field of ${f.size} bytes is not a u64`);
  return view.getBigUint64(base + f.offset, true);
}
