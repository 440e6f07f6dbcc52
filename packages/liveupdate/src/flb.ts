import { Errno, KernelError, describeError, hex, type KernelLog } from '@kho/kernel';
import { LIVEUPDATE_FLB_COMPAT_LENGTH, LUO_FLB_MAX } from './abi';
import type { LiveupdateFileHandler, LiveupdateFlb, LiveupdateFlbOpArgs } from './handler';

/** One registered FLB and its two lives: this kernel's outgoing object and the previous kernel's incoming one. */
export interface FlbState {
  readonly flb: LiveupdateFlb;
  /** Handlers linked to it. */
  users: number;
  readonly outgoing: { count: number; data: number; obj: unknown };
  readonly incoming: { count: number; data: number; obj: unknown; retrieved: boolean; finished: boolean; refused?: string };
}

/** An FLB entry as the previous kernel serialised it (`luo_flb_ser`). */
export interface IncomingFlbEntry {
  readonly name: string;
  readonly data: number;
  readonly count: number;
}

/**
 * FLB registration and reference counting (upstream luo_flb.c, 7.2 form). Outgoing: the first dependent file
 * preserved runs `preserve`, the last unpreserved runs `unpreserve`; at the kexec every FLB with a count is
 * serialised in registration order. Incoming: the serialised count is loaded when the FLB is first needed (first
 * `getIncoming`, or the first dependent file's finish); each `getIncoming` takes a reference, each put and each
 * dependent file's finish drops one, and the last runs `finish`.
 */
export class FlbRegistry {
  private readonly all: FlbState[] = [];
  private readonly byHandler = new Map<LiveupdateFileHandler, FlbState[]>();
  private incomingEntries: readonly IncomingFlbEntry[] | undefined;
  private incomingError: string | undefined;

  constructor(private readonly log: KernelLog) {}

  /** Every registered FLB, in registration order. */
  get states(): readonly FlbState[] {
    return this.all;
  }

  /** The FLBs `handler` depends on, in the order they were linked. */
  of(handler: LiveupdateFileHandler): readonly FlbState[] {
    return this.byHandler.get(handler) ?? [];
  }

  /** @internal the handler was registered: it may now take FLBs. */
  addHandler(handler: LiveupdateFileHandler): void {
    if (!this.byHandler.has(handler)) this.byHandler.set(handler, []);
  }

  /** @internal the handler is gone: its links go too (upstream's unregister_all). */
  removeHandler(handler: LiveupdateFileHandler): void {
    for (const s of this.byHandler.get(handler) ?? []) this.unlink(s);
    this.byHandler.delete(handler);
  }

  /**
   * Links `flb` to `handler` (upstream liveupdate_register_flb). Throws, in upstream's order: EINVAL for a
   * missing op or a handler that is not registered, EEXIST when already linked to this handler, ENOSPC when
   * LUO_FLB_MAX distinct FLBs exist, EEXIST when another FLB has the same compatible; EINVAL for a compatible
   * that does not fit its 48 bytes (the string is copied into the handover).
   */
  register(handler: LiveupdateFileHandler, flb: LiveupdateFlb): void {
    for (const op of ['preserve', 'unpreserve', 'retrieve', 'finish'] as const) {
      if (typeof flb[op] !== 'function') throw new KernelError(Errno.EINVAL, `liveupdate_register_flb('${flb.compatible}'): op '${op}' is missing`);
    }
    const links = this.byHandler.get(handler);
    if (!links) throw new KernelError(Errno.EINVAL, `liveupdate_register_flb('${flb.compatible}'): handler '${handler.compatible}' is not registered`);
    checkCompatible(flb.compatible, LIVEUPDATE_FLB_COMPAT_LENGTH, 'liveupdate_register_flb');
    if (links.some((s) => s.flb === flb)) throw new KernelError(Errno.EEXIST, `liveupdate_register_flb('${flb.compatible}'): already linked to handler '${handler.compatible}'`);
    let state = this.all.find((s) => s.flb === flb);
    if (!state) {
      if (this.all.length === LUO_FLB_MAX) throw new KernelError(Errno.ENOSPC, `liveupdate_register_flb('${flb.compatible}'): ${LUO_FLB_MAX} FLBs are registered (the most the FLB page holds)`);
      if (this.all.some((s) => s.flb.compatible === flb.compatible)) {
        throw new KernelError(Errno.EEXIST, `liveupdate_register_flb('${flb.compatible}'): another FLB has this compatible`);
      }
      state = { flb, users: 0, outgoing: { count: 0, data: 0, obj: undefined }, incoming: { count: 0, data: 0, obj: undefined, retrieved: false, finished: false } };
      this.all.push(state);
    }
    state.users++;
    links.push(state);
  }

  /** Unlinks `flb` from `handler` (upstream liveupdate_unregister_flb); a no-op, logged, when it was not linked. */
  unregister(handler: LiveupdateFileHandler, flb: LiveupdateFlb): void {
    const links = this.byHandler.get(handler) ?? [];
    const i = links.findIndex((s) => s.flb === flb);
    if (i < 0) {
      this.log.warn('luo', `Failed to unregister FLB '${flb.compatible}': not found in file handler '${handler.compatible}'`);
      return;
    }
    const [s] = links.splice(i, 1);
    this.unlink(s);
  }

  // ------------------------------------------------------------------------ outgoing

  /** A file of `handler` is being preserved: a reference on each of its FLBs; on failure the ones taken are dropped. */
  filePreserve(handler: LiveupdateFileHandler): void {
    const taken: FlbState[] = [];
    try {
      for (const s of this.of(handler)) {
        if (s.outgoing.count === 0) {
          const args: LiveupdateFlbOpArgs = { flb: s.flb, data: 0, obj: undefined };
          s.flb.preserve(args);
          s.outgoing.data = args.data;
          s.outgoing.obj = args.obj;
        }
        s.outgoing.count++;
        taken.push(s);
      }
    } catch (e) {
      for (const s of taken.reverse()) this.unpreserveOne(s);
      throw e;
    }
  }

  /** A file of `handler` was unpreserved: each FLB's reference dropped, in reverse order. */
  fileUnpreserve(handler: LiveupdateFileHandler): void {
    for (const s of [...this.of(handler)].reverse()) this.unpreserveOne(s);
  }

  /** The outgoing object of `flb` (upstream liveupdate_flb_get_outgoing). EINVAL when it is not registered. */
  getOutgoing(flb: LiveupdateFlb): unknown {
    return this.stateOf(flb, 'liveupdate_flb_get_outgoing').outgoing.obj;
  }

  /** What the kexec writes: every FLB with a count, in registration order. */
  outgoingEntries(): IncomingFlbEntry[] {
    return this.all.filter((s) => s.outgoing.count > 0).map((s) => ({ name: s.flb.compatible, data: s.outgoing.data, count: s.outgoing.count }));
  }

  // ------------------------------------------------------------------------ incoming

  /** @internal what the previous kernel serialised (or why it was refused); set when the incoming sessions are rebuilt. */
  setIncoming(entries: readonly IncomingFlbEntry[] | undefined, error?: string): void {
    this.incomingEntries = entries;
    this.incomingError = error;
  }

  /** The previous kernel's entries (undefined: none, or refused). */
  get incoming(): readonly IncomingFlbEntry[] | undefined {
    return this.incomingEntries;
  }

  /**
   * Checks each incoming entry's count against the incoming files that depend on it (a project check: 7.2 trusts
   * the count, so a wrong one leaks the object or underflows). A mismatch refuses that FLB: it is logged, its
   * getIncoming fails with EINVAL and its dependents' finishes leave it alone. Returns the lines logged.
   */
  checkIncomingCounts(dependents: (s: FlbState) => number): string[] {
    const out: string[] = [];
    for (const s of this.all) {
      const e = this.incomingEntries?.find((x) => x.name === s.flb.compatible);
      if (!e) continue;
      const n = dependents(s);
      if (e.count !== n) {
        s.incoming.refused = `incoming FLB '${e.name}' has count ${Number.isFinite(e.count) ? e.count : '>= 2^53'} (wanted ${n}, its dependent files in the incoming sessions)`;
        this.log.error('luo', `refusing ${s.incoming.refused}`);
        out.push(s.incoming.refused);
      }
    }
    return out;
  }

  /**
   * The incoming object of `flb` (upstream liveupdate_flb_get_incoming): the first call runs `retrieve`; each
   * successful call takes a reference (drop it with {@link putIncoming}). Throws ENODATA (no incoming FLB data,
   * or finished), ENOENT (not in the handover), EINVAL (not registered, or refused), or the retrieve error.
   */
  getIncoming(flb: LiveupdateFlb): unknown {
    const s = this.stateOf(flb, 'liveupdate_flb_get_incoming');
    if (s.incoming.obj === undefined || !s.incoming.retrieved) this.retrieveOne(s);
    s.incoming.count++;
    return s.incoming.obj;
  }

  /** Drops a reference taken by getIncoming; the last one finishes the FLB. */
  putIncoming(flb: LiveupdateFlb): void {
    this.putOne(this.stateOf(flb, 'liveupdate_flb_put_incoming'));
  }

  /** A file of `handler` finished in this kernel: each FLB's incoming reference dropped, in reverse order. */
  fileFinish(handler: LiveupdateFileHandler): void {
    for (const s of [...this.of(handler)].reverse()) {
      if (s.incoming.refused || s.incoming.finished) continue;
      if (!s.incoming.retrieved) {
        try {
          this.retrieveOne(s);
        } catch (e) {
          this.log.warn('luo', `FLB '${s.flb.compatible}': retrieve at a dependent file's finish failed: ${describeError(e, { errno: true })}`);
          continue;
        }
      }
      this.putOne(s);
    }
  }

  private retrieveOne(s: FlbState): void {
    const what = `liveupdate_flb_get_incoming('${s.flb.compatible}')`;
    if (s.incoming.finished) throw new KernelError(Errno.ENODATA, `${what}: already finished`);
    if (s.incoming.refused) throw new KernelError(Errno.EINVAL, `${what}: ${s.incoming.refused}`);
    if (s.incoming.retrieved) return;
    if (!this.incomingEntries) throw new KernelError(Errno.ENODATA, `${what}: no incoming FLB data${this.incomingError ? ` (${this.incomingError})` : ''}`);
    const e = this.incomingEntries.find((x) => x.name === s.flb.compatible);
    if (!e) throw new KernelError(Errno.ENOENT, `${what}: not in the handover`);
    const args: LiveupdateFlbOpArgs = { flb: s.flb, data: e.data, obj: undefined };
    s.flb.retrieve(args);
    s.incoming.data = e.data;
    s.incoming.count = e.count;
    s.incoming.obj = args.obj;
    s.incoming.retrieved = true;
  }

  private putOne(s: FlbState): void {
    if (s.incoming.count <= 0) {
      this.log.warn('luo', `FLB '${s.flb.compatible}': incoming reference count underflow (data ${hex(s.incoming.data)})`);
      return;
    }
    if (--s.incoming.count > 0) return;
    s.flb.finish({ flb: s.flb, data: s.incoming.data, obj: s.incoming.obj });
    s.incoming.data = 0;
    s.incoming.obj = undefined;
    s.incoming.finished = true;
  }

  private unpreserveOne(s: FlbState): void {
    if (--s.outgoing.count > 0) return;
    s.outgoing.count = 0;
    s.flb.unpreserve({ flb: s.flb, data: s.outgoing.data, obj: s.outgoing.obj });
    s.outgoing.data = 0;
    s.outgoing.obj = undefined;
  }

  private unlink(s: FlbState): void {
    if (--s.users === 0) this.all.splice(this.all.indexOf(s), 1);
  }

  private stateOf(flb: LiveupdateFlb, what: string): FlbState {
    const s = this.all.find((x) => x.flb === flb);
    if (!s) throw new KernelError(Errno.EINVAL, `${what}('${flb.compatible}'): the FLB is not registered`);
    return s;
  }
}

/** A compatible string must fit its array with the NUL (the handover copies it): 1..len-1 UTF-8 bytes, no NUL. */
export function checkCompatible(compatible: string, len: number, what: string): void {
  const n = new TextEncoder().encode(compatible).length;
  if (typeof compatible !== 'string' || n === 0 || n > len - 1 || compatible.includes('\0')) {
    throw new KernelError(Errno.EINVAL, `${what}: compatible ${JSON.stringify(compatible)} (wanted 1..${len - 1} bytes without NUL)`);
  }
}
