import { Errno, KernelBug, KernelError } from '@kho/kernel';
import type { Field } from './field';

/** A layout's fields, by name, in order. */
export type Fields = Record<string, Field<unknown>>;

/** The names of the fields of `F` that hold a value (reserved and padding fields are left out). */
type ValueKeys<F extends Fields> = { [K in keyof F]: F[K] extends Field<undefined> ? never : K }[keyof F];

/** The decoded object of a layout with fields `F`. */
export type StructValue<F extends Fields> = { -readonly [K in ValueKeys<F>]: F[K] extends Field<infer T> ? T : never };

/** One row of a layout's table: where a field sits and what it is. */
export interface FieldInfo {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
  readonly type: string;
  /** Reserved or padding: holds no value. */
  readonly hidden: boolean;
}

/** A field as encode and decode walk it. */
interface Slot {
  readonly key: string;
  readonly field: Field<unknown>;
  readonly offset: number;
  readonly path: string;
  readonly hidden: boolean;
}

/** Something physical memory can be read from (PhysicalMemory is one). */
export interface ByteSource {
  read(addr: number, len: number): Uint8Array;
}

/** Something physical memory can be written to (PhysicalMemory is one). */
export interface ByteSink {
  write(addr: number, bytes: Uint8Array): void;
}

/**
 * A binary layout declared once: its fields in order, their offsets and the total size all come from the one
 * declaration, and so do encode and decode (with bounds, reserved-byte and string checks). Layouts are the
 * contracts of every `abi/` folder; tests pin their sizes and golden bytes (see `@kho/struct/testing`).
 */
export class Layout<F extends Fields> {
  /** Bytes of the whole struct. */
  readonly size: number;
  /** Every field with its offset, in order (the layout's table). */
  readonly table: readonly FieldInfo[];
  private readonly offsets: Record<string, number>;
  /** The fields in order with what encode and decode need, prepared once (names for messages included). */
  private readonly slots: readonly Slot[];

  constructor(
    /** The C name of the struct (`kho_vmalloc`); errors and tables use it. */
    readonly name: string,
    readonly fields: F,
    expectedSize?: number,
  ) {
    let off = 0;
    const table: FieldInfo[] = [];
    const offsets: Record<string, number> = {};
    for (const [field, f] of Object.entries(fields)) {
      table.push({ name: field, offset: off, size: f.size, type: f.type, hidden: f.hidden });
      offsets[field] = off;
      off += f.size;
    }
    if (expectedSize !== undefined && off !== expectedSize) {
      throw new KernelBug(`layout ${name}: its fields take ${off} bytes, but it is declared as ${expectedSize}`);
    }
    this.size = off;
    this.table = table;
    this.offsets = offsets;
    this.slots = table.map((info) => ({ key: info.name, field: fields[info.name], offset: info.offset, path: `${name}.${info.name}`, hidden: info.hidden }));
  }

  /** Byte offset of `field` in the struct. Throws KernelBug for a name the layout does not have. */
  offsetOf(field: keyof F & string): number {
    const off = this.offsets[field];
    if (off === undefined) throw new KernelBug(`layout ${this.name} has no field '${field}'`);
    return off;
  }

  /** The struct's bytes for `value` (reserved and padding bytes zero). Throws EINVAL naming a field that does not fit. */
  encode(value: StructValue<F>): Uint8Array {
    const out = new Uint8Array(this.size);
    this.encodeInto(out, 0, value);
    return out;
  }

  /** Writes `value` into `target` at `offset`. Throws EINVAL when it does not fit there, or a field does not fit. */
  encodeInto(target: Uint8Array, offset: number, value: StructValue<F>): void {
    this.checkRoom(target.length, offset, 'encode');
    const view = new DataView(target.buffer, target.byteOffset + offset, this.size);
    const v = value as Record<string, unknown>;
    const slots = this.slots;
    for (let i = 0; i < slots.length; i++) {
      const s = slots[i];
      s.field.write(view, s.offset, v[s.key], s.path);
    }
  }

  /**
   * Reads the struct at `offset` of `bytes`. Throws EINVAL when the bytes are too few, a reserved byte is not zero,
   * or a string field has no terminator: each message names the struct and the field.
   */
  decode(bytes: Uint8Array, offset = 0): StructValue<F> {
    this.checkRoom(bytes.length, offset, 'decode');
    const view = new DataView(bytes.buffer, bytes.byteOffset + offset, this.size);
    const out: Record<string, unknown> = {};
    const slots = this.slots;
    for (let i = 0; i < slots.length; i++) {
      const s = slots[i];
      const v = s.field.read(view, s.offset, s.path);
      if (!s.hidden) out[s.key] = v;
    }
    return out as StructValue<F>;
  }

  /** Reads the struct at physical address `addr` of `ram`. Throws as decode, and as `ram.read` (EFAULT outside RAM). */
  read(ram: ByteSource, addr: number): StructValue<F> {
    return this.decode(ram.read(addr, this.size));
  }

  /** Writes the struct at physical address `addr` of `ram`. Throws as encode, and as `ram.write`. */
  write(ram: ByteSink, addr: number, value: StructValue<F>): void {
    ram.write(addr, this.encode(value));
  }

  private checkRoom(length: number, offset: number, what: string): void {
    if (!Number.isInteger(offset) || offset < 0 || offset + this.size > length) {
      throw new KernelError(Errno.EINVAL, `${this.name}: ${what} needs ${this.size} bytes at offset ${offset} (the buffer holds ${length})`);
    }
  }
}

/**
 * Declares a layout: `struct('kho_vmalloc', { first: u64(), total_pages: u32(), flags: u16(), order: u16() }, 16)`.
 * Fields are packed in the order given; declare padding explicitly. `size`, when given, is checked against the
 * fields (a KernelBug at load time if they disagree), so the declaration states the struct's size once more as a
 * guard.
 */
export function struct<const F extends Fields>(name: string, fields: F, size?: number): Layout<F> {
  return new Layout(name, fields, size);
}

/** A layout used as a field of another (a nested struct). */
export function nested<F extends Fields>(layout: Layout<F>): Field<StructValue<F>> {
  return {
    type: `struct ${layout.name}`,
    size: layout.size,
    hidden: false,
    write(view, at, value) {
      layout.encodeInto(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), at, value);
    },
    read(view, at) {
      return layout.decode(new Uint8Array(view.buffer, view.byteOffset, view.byteLength), at);
    },
  };
}
