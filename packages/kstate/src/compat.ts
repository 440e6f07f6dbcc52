import { Errno, KernelError } from '@kho/kernel';
import { idKey, isDescription, isScalarKind, showId, type Description, type ScalarKind } from './model';
import { RANGE } from './restore';
import { KSTATE_SCHEMA_FORMAT, schemaOf, validateSchemas, writtenFields, type DescSchema, type FieldSchema, type SchemaSnapshot } from './schema';

/** Which versions of a description can read which. */
export interface CompatReport {
  /** The newer code reads data the older code writes. */
  readonly newReadsOld: boolean;
  /** The older code reads data the newer code writes. */
  readonly oldReadsNew: boolean;
  /** Why a direction fails, each prefixed `new reads old:` or `old reads new:`. */
  readonly reasons: readonly string[];
  /** What a direction that works will do: fields defaulted, dropped or skipped, subsections skipped, upgrade steps. */
  readonly notes: readonly string[];
}

interface Snap {
  readonly root: DescSchema;
  readonly byId: ReadonlyMap<string, DescSchema>;
}

/**
 * Compares two versions of a description (live descriptions or `schemaOf` snapshots, e.g. one committed with
 * the previous release) before any kexec: whether the newer code reads the older data, and the reverse, by the
 * rules restore applies (version window and `oldestReader`, fields by name, value kinds that always convert,
 * nested descriptions and subsections recursively). Upgrade steps are code the check cannot run: fields are
 * compared as written and the steps are noted. Deterministic. Throws EINVAL for a malformed snapshot.
 */
export function compat(older: Description | SchemaSnapshot, newer: Description | SchemaSnapshot): CompatReport {
  const o = snap(older, 'the older schema');
  const n = snap(newer, 'the newer schema');
  const reasons: string[] = [];
  const notes: string[] = [];
  const run = (label: string, reader: Snap, writer: Snap): boolean => {
    const before = reasons.length;
    if (idKey(reader.root.id) !== idKey(writer.root.id)) {
      reasons.push(`${label}: the descriptions have different ids (${showId(writer.root.id)} and ${showId(reader.root.id)})`);
    } else {
      check(label, reader, writer, reader.root, writer.root, '', reasons, notes);
    }
    return reasons.length === before;
  };
  const newReadsOld = run('new reads old', n, o);
  const oldReadsNew = run('old reads new', o, n);
  return { newReadsOld, oldReadsNew, reasons, notes };
}

function snap(x: Description | SchemaSnapshot, what: string): Snap {
  const s = isDescription(x) ? schemaOf(x) : x;
  if (typeof s !== 'object' || s === null || s.format !== KSTATE_SCHEMA_FORMAT || !Array.isArray(s.descriptions)) {
    throw new KernelError(Errno.EINVAL, `kstate: compat: ${what} is not a schema snapshot of format ${KSTATE_SCHEMA_FORMAT}`);
  }
  const byId = validateSchemas(s.descriptions, `compat: ${what}`);
  const root = byId.get(idKey(s.root));
  if (!root) throw new KernelError(Errno.EINVAL, `kstate: compat: ${what} does not describe its root ${showId(s.root)}`);
  return { root, byId };
}

function check(label: string, reader: Snap, writer: Snap, rd: DescSchema, wd: DescSchema, path: string, reasons: string[], notes: string[]): void {
  const reason = (s: string): void => void reasons.push(`${label}: ${s}`);
  const note = (s: string): void => void notes.push(`${label}: ${s}`);
  const who = path ? `'${rd.name}' (${path.replace(/[./]$/, '')})` : `'${rd.name}'`;
  if (wd.version < rd.minVersion) {
    reason(`${who} data is version ${wd.version}, the code reads versions ${rd.minVersion}..${rd.version}`);
    return;
  }
  if (wd.version > rd.version && wd.oldestReader > rd.version) {
    reason(`${who} data is version ${wd.version}, which needs readers of version ${wd.oldestReader} or later; the code is version ${rd.version}`);
    return;
  }
  const steps = (rd.upgrades ?? []).filter((v) => v >= wd.version && v < rd.version);
  if (steps.length > 0) note(`${who} upgrade steps ${steps.map((v) => `${v}->${v + 1}`).join(', ')} run (fields are compared as written)`);
  const readerFields = new Map(rd.fields.map((f) => [f.name, f]));
  const written = writtenFields(wd);
  const writtenNames = new Set(written.map((f) => f.name));
  for (const wf of written) {
    const p = `${path}${wf.name}`;
    const rf = readerFields.get(wf.name);
    if (!rf) {
      note(`field '${p}' (${kindText(wf)}) is skipped`);
      continue;
    }
    if (rf.until !== undefined) {
      note(`field '${p}' is dropped (deprecated from version ${rf.until})`);
      continue;
    }
    const why = convertible(wf, rf);
    if (why) {
      reason(`field '${p}' ${why}`);
      continue;
    }
    if (wf.kind === 'custom') note(`field '${p}' is custom: its compatibility is up to its callbacks`);
    if (wf.ref !== undefined && rf.ref !== undefined) {
      const sep = wf.kind === 'array' ? '[].' : '.';
      check(label, reader, writer, reader.byId.get(idKey(rf.ref))!, writer.byId.get(idKey(wf.ref))!, `${p}${sep}`, reasons, notes);
    }
  }
  for (const rf of rd.fields) {
    if (rf.until === undefined && !writtenNames.has(rf.name)) note(`field '${path}${rf.name}' is defaulted${rf.since !== undefined ? ` (since version ${rf.since})` : ''}`);
  }
  const readerSubs = new Set(rd.subsections.map(idKey));
  for (const id of wd.subsections) {
    const ws = writer.byId.get(idKey(id))!;
    if (!readerSubs.has(idKey(id))) {
      note(`subsection ${path}'${ws.name}' is skipped when written`);
      continue;
    }
    check(label, reader, writer, reader.byId.get(idKey(id))!, ws, `${path}${ws.name}/`, reasons, notes);
  }
}

function kindText(f: FieldSchema): string {
  if (f.kind === 'str' || f.kind === 'bytes') return `${f.kind}[${f.size}]`;
  if (f.kind === 'array') return `array of ${f.elem === 'struct' ? showId(f.ref!) : f.elem}`;
  if (f.ref !== undefined) return `${f.kind} ${showId(f.ref)}`;
  return f.kind;
}

/** Undefined when every value of the writer's field converts to the reader's; else why not. */
function convertible(w: FieldSchema, r: FieldSchema): string | undefined {
  const mismatch = `is ${kindText(w)} in the data and ${kindText(r)} in the code`;
  if (isScalarKind(w.kind) || isScalarKind(r.kind)) {
    if (!isScalarKind(w.kind) || !isScalarKind(r.kind)) return mismatch;
    return scalarFits(w.kind, r.kind) ? undefined : `${mismatch}, which does not hold every value`;
  }
  if (w.kind !== r.kind) return mismatch;
  switch (w.kind) {
    case 'str':
      return r.size >= w.size ? undefined : `${mismatch}, which does not hold every value`;
    case 'bytes':
      return r.size === w.size ? undefined : mismatch;
    case 'struct':
    case 'ptr':
      return idKey(w.ref!) === idKey(r.ref!) ? undefined : mismatch;
    case 'array':
      if (w.elem === 'struct' || r.elem === 'struct') return w.elem === r.elem && idKey(w.ref!) === idKey(r.ref!) ? undefined : mismatch;
      return scalarFits(w.elem as ScalarKind, r.elem as ScalarKind) ? undefined : `${mismatch}, whose elements do not hold every value`;
    default:
      return undefined; // folio, vmalloc, physRange, custom: same kind
  }
}

function scalarFits(w: ScalarKind, r: ScalarKind): boolean {
  if (w === 'bool' || r === 'bool') return w === r;
  const [wl, wh] = RANGE[w];
  const [rl, rh] = RANGE[r];
  return wl >= rl && wh <= rh;
}
