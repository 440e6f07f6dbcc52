import { describeError, hex } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import { decodeFdt, type FdtNode } from '@kho/fdt';
import { KHO_MAX_BLOCKS, KhoBlockHeaderStruct, entriesPerBlock } from '@kho/kho-block';
import {
  LIVEUPDATE_HNDL_COMPAT_LENGTH,
  LUO_FLB_MAX,
  LUO_SESSION_NAME_LEN,
  LUO_V1_FDT_SIZE,
  LUO_V1_FILE_MAX,
  LUO_V1_SESSION_MAX,
  LuoFileSerStruct,
  LuoFlbHeaderSerStruct,
  LuoFlbSerStruct,
  LuoSerStruct,
  LuoSessionSerStruct,
} from './abi';

/** What the decoder reads RAM through (PhysicalMemory is one). */
export interface LuoDecodeMemory {
  isRam(addr: number, size?: number): boolean;
  read(addr: number, len: number): Uint8Array;
}

/** A decoder of one handler's data (e.g. memfd-v2's record), by compatible. It may throw: the error is recorded. */
export type LuoFileDecoder = (ram: LuoDecodeMemory, data: number) => unknown;

export interface LuoDecodeOptions {
  /** Decoders of handler data, by the handler's compatible. */
  readonly fileDecoders?: Readonly<Record<string, LuoFileDecoder>>;
  /** The subtree's blob-size, when the KHO generation hands it over. */
  readonly size?: number;
}

export interface DecodedLuoFile {
  readonly compatible: string;
  readonly token: string;
  readonly data: string;
  /** Where the record lies. */
  readonly record: string;
  /** The handler data, decoded (when a decoder for its compatible was given). */
  readonly decoded?: unknown;
  readonly error?: string;
}

export interface DecodedLuoSession {
  readonly name: string;
  readonly record: string;
  readonly fileCount: number;
  /** luo-v5: the file block chain; luo-v1: the file area. */
  readonly fileBlocks: readonly string[];
  readonly files: readonly DecodedLuoFile[];
  readonly error?: string;
}

/** LUO's handover as plain JSON-able data: what `kho inspect` shows and what a renderer may draw. */
export interface DecodedLuo {
  readonly format: 'luo-v5' | 'luo-v1' | 'unknown';
  readonly phys: string;
  readonly compatible?: string;
  readonly liveupdateNum?: number;
  readonly sessionBlocks: readonly string[];
  readonly sessions: readonly DecodedLuoSession[];
  readonly flbs?: { readonly page: string; readonly pgcnt?: number; readonly entries: ReadonlyArray<{ name: string; data: string; count: number }>; readonly error?: string };
  /** Everything that did not decode, one line each. The decoder never throws. */
  readonly errors: readonly string[];
}

const num = (n: number): string => (Number.isFinite(n) ? hex(n) : '>= 2^53');

/**
 * Decodes the `LUO` subtree blob at `phys` of `ram` (luo-v5's `luo_ser` or luo-v1's FDT, told apart by the FDT
 * magic) into a plain tree: sessions, their files, FLBs. Hostile-input safe: every pointer is checked against RAM
 * before it is read, chains are bounded and checked for loops, counts are bounded; whatever does not decode is
 * recorded in `errors` (and in the record it belongs to), never thrown.
 */
export function decodeLuo(ram: LuoDecodeMemory, phys: number, opts: LuoDecodeOptions = {}): DecodedLuo {
  const errors: string[] = [];
  const base = { phys: num(phys), errors };
  if (!Number.isSafeInteger(phys) || !ram.isRam(phys, 32)) return { ...base, format: 'unknown', sessionBlocks: [], sessions: [], errors: [`LUO blob at ${num(phys)} is not RAM`] };
  const head = ram.read(phys, 4);
  if (head[0] === 0xd0 && head[1] === 0x0d && head[2] === 0xfe && head[3] === 0xed) return decodeV1(ram, phys, opts, errors);
  if (opts.size !== undefined && opts.size < LuoSerStruct.size) errors.push(`blob-size ${opts.size} is below ${LuoSerStruct.size}`);
  const raw = ram.read(phys, LuoSerStruct.size);
  const end = raw.subarray(0, 8).indexOf(0);
  const compatible = new TextDecoder().decode(raw.subarray(0, end < 0 ? 8 : end));
  let ser: ReturnType<typeof LuoSerStruct.decode>;
  try {
    ser = LuoSerStruct.decode(raw);
  } catch (e) {
    errors.push(`luo_ser: ${describeError(e)}`);
    return { ...base, format: 'unknown', compatible, sessionBlocks: [], sessions: [] };
  }
  if (compatible !== 'luo-v5') errors.push(`luo_ser compatible is '${compatible}' (this decoder reads 'luo-v5' and luo-v1 FDTs)`);
  const sessionBlocks: string[] = [];
  const sessions: DecodedLuoSession[] = [];
  const chain = walkBlocks(ram, ser.sessions_pa, LuoSessionSerStruct.size, 'session blocks');
  if (chain.error) errors.push(chain.error);
  for (const b of chain.blocks) sessionBlocks.push(hex(b));
  for (const rec of chain.entries) {
    const s = safeSession(rec, () => decodeSessionRecord(ram, rec, opts, (files) => walkBlocks(ram, files, LuoFileSerStruct.size, 'file blocks')));
    if (s.error) errors.push(`session record at ${s.record}: ${s.error}`);
    for (const f of s.files) if (f.error) errors.push(`file record at ${f.record}: ${f.error}`);
    sessions.push(s);
  }
  const flbs = safeFlbs(ser.flbs_pa, () => decodeFlbPage(ram, ser.flbs_pa));
  if (flbs?.error) errors.push(flbs.error);
  return { ...base, format: 'luo-v5', compatible, liveupdateNum: ser.liveupdate_num, sessionBlocks, sessions, flbs };
}

function safeSession(rec: number, body: () => DecodedLuoSession): DecodedLuoSession {
  try {
    return body();
  } catch (e) {
    return { name: '?', record: hex(rec), fileCount: 0, fileBlocks: [], files: [], error: describeError(e) };
  }
}

function safeFlbs(page: number, body: () => DecodedLuo['flbs']): DecodedLuo['flbs'] {
  try {
    return body();
  } catch (e) {
    return { page: num(page), entries: [], error: `FLB page ${num(page)}: ${describeError(e)}` };
  }
}

interface Chain {
  readonly blocks: number[];
  readonly entries: number[];
  readonly error?: string;
}

/** A kho_block chain, followed with a loop check and the 10,000-block bound; entries as each header counts them. */
function walkBlocks(ram: LuoDecodeMemory, head: number, entrySize: number, what: string): Chain {
  const blocks: number[] = [];
  const entries: number[] = [];
  const seen = new Set<number>();
  const per = entriesPerBlock(entrySize);
  for (let p = head; p !== 0; ) {
    if (!Number.isSafeInteger(p) || p % PAGE_SIZE !== 0 || !ram.isRam(p, PAGE_SIZE)) return { blocks, entries, error: `${what}: block ${blocks.length} at ${num(p)} is not a page of RAM` };
    if (seen.has(p)) return { blocks, entries, error: `${what}: block ${hex(p)} is reached twice (a loop)` };
    if (blocks.length === KHO_MAX_BLOCKS) return { blocks, entries, error: `${what}: more than ${KHO_MAX_BLOCKS} blocks` };
    seen.add(p);
    blocks.push(p);
    const h = KhoBlockHeaderStruct.decode(ram.read(p, KhoBlockHeaderStruct.size));
    if (h.count === 0 || h.count > per) return { blocks, entries, error: `${what}: block at ${hex(p)} holds count ${Number.isFinite(h.count) ? h.count : '>= 2^53'} (wanted 1..${per})` };
    for (let i = 0; i < h.count; i++) entries.push(p + KhoBlockHeaderStruct.size + i * entrySize);
    p = h.next;
  }
  return { blocks, entries };
}

function decodeSessionRecord(ram: LuoDecodeMemory, rec: number, opts: LuoDecodeOptions, files: (head: number) => Chain): DecodedLuoSession {
  const raw = ram.read(rec, LuoSessionSerStruct.size);
  const len = raw.subarray(0, LUO_SESSION_NAME_LEN).indexOf(0);
  const name = new TextDecoder().decode(raw.subarray(0, len < 0 ? LUO_SESSION_NAME_LEN : len));
  const r = LuoSessionSerStruct.decode(raw);
  const base = { name, record: hex(rec), fileCount: r.count };
  const nameError = len < 0 ? `the name has no NUL in its ${LUO_SESSION_NAME_LEN} bytes` : len === 0 ? 'the name is empty' : undefined;
  if (r.files === 0) return { ...base, fileBlocks: [], files: [], error: nameError ?? (r.count !== 0 ? `no file records but count ${r.count}` : undefined) };
  const chain = files(r.files);
  const out = chain.entries.map((e) => {
    try {
      return decodeFileRecord(ram, e, opts);
    } catch (err) {
      return { compatible: '?', token: '?', data: '?', record: hex(e), error: describeError(err) };
    }
  });
  const error = nameError ?? chain.error ?? (out.length !== r.count ? `count ${Number.isFinite(r.count) ? r.count : '>= 2^53'} but ${out.length} records` : undefined);
  return { ...base, fileBlocks: chain.blocks.map((b) => hex(b)), files: out, error };
}

function decodeFileRecord(ram: LuoDecodeMemory, rec: number, opts: LuoDecodeOptions): DecodedLuoFile {
  const raw = ram.read(rec, LuoFileSerStruct.size);
  const len = raw.subarray(0, LIVEUPDATE_HNDL_COMPAT_LENGTH).indexOf(0);
  const compatible = new TextDecoder().decode(raw.subarray(0, len < 0 ? LIVEUPDATE_HNDL_COMPAT_LENGTH : len));
  const f = LuoFileSerStruct.decode(raw);
  const base = { compatible, token: `0x${f.token.toString(16)}`, data: num(f.data), record: hex(rec) };
  if (len < 0) return { ...base, error: `the compatible has no NUL in its ${LIVEUPDATE_HNDL_COMPAT_LENGTH} bytes` };
  const dec = opts.fileDecoders?.[compatible];
  if (!dec) return base;
  try {
    return { ...base, decoded: dec(ram, f.data) };
  } catch (e) {
    return { ...base, error: `${compatible} data: ${describeError(e, { errno: true })}` };
  }
}

function decodeFlbPage(ram: LuoDecodeMemory, page: number): DecodedLuo['flbs'] {
  if (page === 0) return undefined;
  if (!Number.isSafeInteger(page) || page % PAGE_SIZE !== 0 || !ram.isRam(page, PAGE_SIZE)) return { page: num(page), entries: [], error: `FLB page ${num(page)} is not a page of RAM` };
  const h = LuoFlbHeaderSerStruct.decode(ram.read(page, LuoFlbHeaderSerStruct.size));
  const entries: Array<{ name: string; data: string; count: number }> = [];
  const n = Math.min(h.count, LUO_FLB_MAX);
  for (let i = 0; i < n; i++) {
    const raw = ram.read(page + LuoFlbHeaderSerStruct.size + i * LuoFlbSerStruct.size, LuoFlbSerStruct.size);
    const len = raw.subarray(0, 48).indexOf(0);
    const e = LuoFlbSerStruct.decode(raw);
    entries.push({ name: new TextDecoder().decode(raw.subarray(0, len < 0 ? 48 : len)), data: num(e.data), count: e.count });
  }
  const error = h.pgcnt !== 1 ? `FLB page ${hex(page)}: pgcnt ${h.pgcnt} (wanted 1)` : h.count > LUO_FLB_MAX ? `FLB page ${hex(page)}: count ${h.count} (wanted at most ${LUO_FLB_MAX})` : undefined;
  return { page: hex(page), pgcnt: h.pgcnt, entries, error };
}

function decodeV1(ram: LuoDecodeMemory, phys: number, opts: LuoDecodeOptions, errors: string[]): DecodedLuo {
  const base = { phys: hex(phys), errors, format: 'luo-v1' as const };
  let fdt: FdtNode;
  try {
    fdt = decodeFdt(ram.read(phys, Math.min(LUO_V1_FDT_SIZE, ram.isRam(phys, LUO_V1_FDT_SIZE) ? LUO_V1_FDT_SIZE : 64)));
  } catch (e) {
    errors.push(`LUO FDT: ${describeError(e)}`);
    return { ...base, sessionBlocks: [], sessions: [] };
  }
  const compatible = fdt.getString('compatible');
  const numProp = fdt.getU64LE('liveupdate-number');
  const sessions: DecodedLuoSession[] = [];
  const sessionBlocks: string[] = [];
  const area = fdt.child('luo-session')?.getU64LE('luo-session-header');
  if (area === undefined) errors.push('no luo-session node with an 8-byte luo-session-header');
  else {
    const a = Number(area);
    if (!Number.isSafeInteger(a) || !ram.isRam(a, 16 * PAGE_SIZE)) errors.push(`session area ${num(a)} is not RAM`);
    else {
      sessionBlocks.push(hex(a));
      const count = Number(new DataView(ram.read(a, 8).buffer).getBigUint64(0, true));
      if (count > LUO_V1_SESSION_MAX) errors.push(`session area: count ${count} (wanted at most ${LUO_V1_SESSION_MAX})`);
      for (let i = 0; i < Math.min(count, LUO_V1_SESSION_MAX); i++) {
        const rec = a + 8 + i * LuoSessionSerStruct.size;
        const s = safeSession(rec, () => decodeSessionRecord(ram, rec, opts, (files) => v1Files(ram, files, rec)));
        if (s.error) errors.push(`session record at ${s.record}: ${s.error}`);
        sessions.push(s);
      }
    }
  }
  const flbPa = fdt.child('luo-flb')?.getU64LE('luo-flb-header');
  return {
    ...base,
    compatible,
    liveupdateNum: numProp === undefined ? undefined : Number(numProp),
    sessionBlocks,
    sessions,
    flbs: flbPa === undefined ? undefined : safeFlbs(Number(flbPa), () => decodeFlbPage(ram, Number(flbPa))),
  };
}

function v1Files(ram: LuoDecodeMemory, files: number, rec: number): Chain {
  if (!Number.isSafeInteger(files) || !ram.isRam(files, 2 * PAGE_SIZE)) return { blocks: [], entries: [], error: `file area ${num(files)} is not RAM` };
  const count = Number(new DataView(ram.read(rec + 72, 8).buffer).getBigUint64(0, true));
  const n = Math.min(count, LUO_V1_FILE_MAX);
  return { blocks: [files], entries: Array.from({ length: n }, (_, i) => files + i * LuoFileSerStruct.size), error: count > LUO_V1_FILE_MAX ? `file area: count ${count} (wanted at most ${LUO_V1_FILE_MAX})` : undefined };
}
