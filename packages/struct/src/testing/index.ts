import { isDeepStrictEqual } from 'node:util';
import type { Fields, Layout, StructValue } from '../layout';

/** Bytes from hex text: `'01 00 00 00 6b 68'`, spaces, newlines, `|` and `_` ignored. Throws for odd or bad digits. */
export function hexBytes(text: string): Uint8Array {
  const clean = text.replace(/[\s|_]/g, '');
  if (!/^([0-9a-fA-F]{2})*$/.test(clean)) throw new Error(`hexBytes: ${JSON.stringify(text)} is not a sequence of hex byte pairs`);
  return Uint8Array.from(clean.match(/../g) ?? [], (h) => parseInt(h, 16));
}

/** `bytes` as hex pairs separated by spaces, 16 to a line. */
export function toHex(bytes: Uint8Array): string {
  const lines: string[] = [];
  for (let i = 0; i < bytes.length; i += 16) lines.push(Array.from(bytes.subarray(i, i + 16), (b) => b.toString(16).padStart(2, '0')).join(' '));
  return lines.join('\n');
}

/**
 * The golden-bytes check of a layout: `value` encodes to exactly `golden` (hex text or bytes, the whole struct) and
 * `golden` decodes back to `value`. Throws an Error that shows the first differing byte and the field that holds
 * it, so a test fails with a message that says what moved.
 */
export function checkGolden<F extends Fields>(l: Layout<F>, value: StructValue<F>, golden: string | Uint8Array): void {
  const want = typeof golden === 'string' ? hexBytes(golden) : golden;
  if (want.length !== l.size) throw new Error(`${l.name}: the golden bytes are ${want.length} bytes, the layout ${l.size}`);
  const got = l.encode(value);
  const at = got.findIndex((b, i) => b !== want[i]);
  if (at >= 0) {
    const f = l.table.find((x) => at >= x.offset && at < x.offset + x.size);
    throw new Error(
      `${l.name}: encode differs at byte ${at} (field ${f?.name ?? '?'} at offset ${f?.offset}): got 0x${got[at].toString(16)}, golden 0x${want[at].toString(16)}\n` +
        `got:\n${toHex(got)}\ngolden:\n${toHex(want)}`,
    );
  }
  const back = l.decode(want);
  if (!isDeepStrictEqual(back, value)) {
    throw new Error(`${l.name}: the golden bytes decode to ${show(back)}, wanted ${show(value)}`);
  }
}

function show(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x instanceof Uint8Array ? toHex(x) : x));
}
