import { injectAll, injectable } from 'tsyringe';
import {
  CommandLine,
  Errno,
  KernelError,
  KernelInfo,
  KernelLog,
  LifecycleBus,
  Phase,
  describeError,
  findKernelError,
  hex,
  withUnwind,
  type KernelPlugin,
  type PluginReport,
} from '@kho/kernel';
import { PhysicalMemory } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KhoBlocks } from '@kho/kho-block';
import {
  LIVEUPDATE_CMD_BASE,
  LIVEUPDATE_CMD_SESSION_BASE,
  LIVEUPDATE_HNDL_COMPAT_LENGTH,
  LIVEUPDATE_IOCTL_CREATE_SESSION,
  LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
  LIVEUPDATE_SESSION_FINISH,
  LIVEUPDATE_SESSION_GET_NAME,
  LIVEUPDATE_SESSION_NAME_LENGTH,
  LIVEUPDATE_SESSION_PRESERVE_FD,
  LIVEUPDATE_SESSION_RETRIEVE_FD,
  LUO_ABI_COMPATIBLE,
  LUO_SESSION_NAME_LEN,
  LUO_V1_COMPATIBLE,
  LiveupdateCreateSessionStruct,
  LiveupdateRetrieveSessionStruct,
  LiveupdateSessionFinishStruct,
  LiveupdateSessionGetNameStruct,
  LiveupdateSessionPreserveFdStruct,
  LiveupdateSessionRetrieveFdStruct,
  LuoFileSerStruct,
  LuoSessionSerStruct,
} from './abi';
import { FlbRegistry, checkCompatible, type FlbState } from './flb';
import type { IncomingLuo, LuoFormat } from './format';
import { LiveupdateFileHandler, type LiveupdateFileOpArgs, type LiveupdateFlb } from './handler';
import { LuoV1Format } from './luo-v1';
import { LuoV5Format } from './luo-v5';
import { LuoSession, type LuoFile } from './session';
import { dispatch, respond, type IoctlOp, type Ucmd } from './ucmd';
import { KernelFile } from './vfs/file';
import type { Process } from './vfs/process';
import { Vfs } from './vfs/vfs';

/** The ABI generations a kernel can be built to write and read (`luo_abi=`). */
export const LUO_FORMATS = [LUO_ABI_COMPATIBLE, LUO_V1_COMPATIBLE] as const;
export type LuoFormatName = (typeof LUO_FORMATS)[number];

/** The device path. */
export const LIVEUPDATE_DEV = '/dev/liveupdate';

type SessionKind = 'incoming' | 'outgoing' | 'any';

const OFF_SER_FILES = LuoSessionSerStruct.offsetOf('files');
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A session as reports show it. */
export interface SessionStatus {
  readonly name: string;
  readonly incoming: boolean;
  readonly retrieved: boolean;
  readonly files: ReadonlyArray<{ token: string; handler: string; data: string; retrieveStatus: number }>;
}

/** What `status()` reports. */
export interface LiveupdateStatus {
  readonly enabled: boolean;
  readonly format: string;
  /** Set when the incoming LUO state was damaged: upstream panics at boot here. */
  readonly panic?: string;
  /** This boot's number (1 after a cold boot). */
  readonly liveupdateNum: number;
  /** Why the first open failed (every open then fails with EIO). */
  readonly deserializeError?: string;
  /** Why no session can be created in this boot (incoming ones are still retrieved). */
  readonly outgoingError?: string;
  readonly frozen: boolean;
  readonly handlers: readonly string[];
  readonly flbs: ReadonlyArray<{ compatible: string; outgoing: number; incoming: number; refused?: string }>;
  readonly outgoing: readonly SessionStatus[];
  readonly incoming: readonly SessionStatus[];
}

/**
 * The Live Update Orchestrator (upstream kernel/liveupdate/luo_*.c, 7.2; spec section 5): one instance per boot,
 * plugin 'liveupdate' (after 'kho' and 'vfs').
 *
 * - boot (late): with KHO enabled, reads the previous kernel's `LUO` subtree (even with `liveupdate=` off, as
 *   upstream); a damaged one is upstream's panic: a fatal boot report, and every later open fails with EIO. With
 *   `liveupdate=on` it sets up the outgoing state, registers the file handlers contributed through DI and
 *   `/dev/liveupdate`.
 * - user space: one opener at a time; sessions, preserve/retrieve by token, finish (see {@link ioctlDevice}).
 * - prepare (the kexec's reboot call): freezes every file and writes every record; a failure unfreezes in reverse
 *   and the update is cancelled. cancel (a later plugin failed): the same undo.
 */
@injectable()
export class Liveupdate implements KernelPlugin {
  readonly name = 'liveupdate';
  readonly after = ['kho', 'vfs'];

  private enabled: boolean;
  private readonly format: LuoFormat;
  private readonly flbRegistry: FlbRegistry;
  private readonly handlerList: LiveupdateFileHandler[] = [];
  private readonly outgoing: LuoSession[] = [];
  private readonly incomingSessions: LuoSession[] = [];
  /** Files preserved or retrieved by any session, by identity (upstream's luo_preserved_files xarray). */
  private readonly preservedIds = new Map<unknown, KernelFile>();
  private incoming: IncomingLuo | undefined;
  private panicReason: string | undefined;
  private incomingNum = 0;
  private deserialized = false;
  private deserializeError: KernelError | undefined;
  private inUse = false;
  /** The serialisation lock is held: LUO is frozen until the jump (or a cancel). */
  private frozen = false;
  private serialized: Array<{ session: LuoSession; ser: number }> | undefined;
  /** Session releases that came while frozen: upstream blocks them on the lock; they run if the update is cancelled. */
  private deferred: LuoSession[] = [];
  /** Why this boot cannot create sessions (KHO cannot preserve, or the outgoing state failed): incoming ones only. */
  private outgoingError: string | undefined;

  constructor(
    private readonly kho: Kho,
    private readonly blocks: KhoBlocks,
    private readonly ram: PhysicalMemory,
    private readonly log: KernelLog,
    private readonly cmdline: CommandLine,
    private readonly vfs: Vfs,
    private readonly bus: LifecycleBus,
    private readonly info: KernelInfo,
    @injectAll(LiveupdateFileHandler, { isOptional: true }) private readonly contributed: LiveupdateFileHandler[],
  ) {
    this.enabled = cmdline.getBool('liveupdate', false);
    const abi = cmdline.get('luo_abi') ?? LUO_ABI_COMPATIBLE;
    if (!(LUO_FORMATS as readonly string[]).includes(abi)) {
      throw new KernelError(Errno.EINVAL, `luo_abi=${abi} (wanted ${LUO_FORMATS.join(' or ')})`);
    }
    this.format = abi === LUO_V1_COMPATIBLE ? new LuoV1Format(kho, blocks, ram, log) : new LuoV5Format(kho, blocks, ram, log);
    this.flbRegistry = new FlbRegistry(log);
  }

  // ------------------------------------------------------------------------------------ lifecycle

  bootLate(): void {
    if (!this.kho.isEnabled() && !this.kho.isKhoBoot()) {
      if (this.enabled) this.log.warn('luo', 'Disabling liveupdate because KHO is disabled');
      this.enabled = false;
      return;
    }
    this.earlyInit();
    if (this.panicReason !== undefined) {
      this.enabled = false;
      this.vfs.registerDevice(LIVEUPDATE_DEV, () => {
        throw new KernelError(Errno.EIO, `open(${LIVEUPDATE_DEV}): the incoming LUO state failed at boot (upstream panics): ${this.panicReason}`);
      });
      return;
    }
    if (!this.enabled) return;
    // Nothing new can be preserved when KHO cannot preserve or the outgoing state cannot be allocated; the
    // sessions the previous kernel handed over are still retrieved (upstream disables live update altogether and
    // loses them): the device stays, CREATE_SESSION says why it cannot.
    if (!this.kho.isEnabled()) {
      this.outgoingError = `KHO cannot preserve in this boot (${this.kho.stats().outgoingError ?? 'disabled'})`;
    } else {
      try {
        this.format.setupOutgoing(this.incomingNum + 1);
      } catch (e) {
        this.outgoingError = `the outgoing LUO state could not be set up (${describeError(e, { errno: true })})`;
      }
    }
    if (this.outgoingError !== undefined) {
      if (!this.incoming) {
        this.enabled = false;
        this.log.error('luo', `${this.outgoingError}; live update disabled`);
        return;
      }
      this.log.error('luo', `${this.outgoingError}: the incoming sessions can be retrieved, no new one can be created`);
    }
    for (const h of this.contributed) {
      try {
        this.registerFileHandler(h);
      } catch (e) {
        this.log.error('luo', `file handler '${h.compatible}' not registered: ${describeError(e, { errno: true })}`);
      }
    }
    this.vfs.registerDevice(LIVEUPDATE_DEV, (proc) => this.openDevice(proc));
    this.log.info('luo', `live update enabled (${this.format.compatible}), number ${this.incomingNum + 1}, handlers: ${this.handlerList.map((h) => h.compatible).join(', ') || 'none'}`);
  }

  /** The kexec's `liveupdate_reboot()`: freeze and serialise every outgoing session, then the FLBs. */
  prepare(): void {
    if (!this.enabled || this.outgoingError !== undefined) return;
    this.serializeSessions();
  }

  /** The update was abandoned after LUO froze: unfreeze everything (in reverse) and let user space go on. */
  cancel(): void {
    if (!this.serialized) return;
    const done = this.serialized;
    this.serialized = undefined;
    for (const { session, ser } of done.reverse()) this.unfreezeSession(session, ser);
    this.format.undoSerialize();
    this.frozen = false;
    this.log.info('luo', 'live update cancelled: sessions unfrozen');
    const deferred = this.deferred.splice(0);
    for (const s of deferred) this.releaseSession(s);
  }

  /** What the restore phase reports: the incoming sessions waiting for user space. */
  restore(): PluginReport | void {
    if (!this.incoming && this.panicReason === undefined) return;
    return { liveupdateNum: this.incomingNum, panic: this.panicReason, incomingSessions: this.incoming ? this.incoming.sessionEntries().length : 0 };
  }

  /** What the finish phase reports: incoming sessions nobody finished (their memory stays reserved, as upstream). */
  finish(): PluginReport | void {
    if (!this.incoming) return;
    // Nobody opened /dev/liveupdate: the sessions were never rebuilt; name them from their records.
    const unfinished = this.deserialized
      ? this.incomingSessions.filter((s) => s.files.length > 0 || !s.retrieved).map((s) => s.name)
      : this.incoming.sessionEntries().map((ser) => recordName(this.ram, ser));
    if (unfinished.length > 0) this.log.warn('luo', `finish: ${unfinished.length} incoming sessions were not finished (${unfinished.slice(0, 8).join(', ')}); their memory stays reserved`);
    return { unfinishedSessions: unfinished };
  }

  // ------------------------------------------------------------------------------------ kernel API

  /** True when live update is enabled in this boot (`liveupdate=on`, KHO on, nothing failed). */
  isEnabled(): boolean {
    return this.enabled;
  }

  /** The ABI generation this kernel writes and reads. */
  get abi(): string {
    return this.format.compatible;
  }

  /** The handlers registered, in order. */
  get handlers(): readonly LiveupdateFileHandler[] {
    return this.handlerList;
  }

  /** The FLB registry (reference counts; for tests and reports). */
  get flbs(): FlbRegistry {
    return this.flbRegistry;
  }

  /**
   * liveupdate_register_file_handler: EOPNOTSUPP when live update is disabled, EINVAL for a missing required op or
   * a compatible that does not fit 48 bytes, EEXIST for a compatible already registered. Then the FLBs the handler
   * lists are linked to it (their errors are thrown after the handler is registered, as two upstream calls would).
   */
  registerFileHandler(h: LiveupdateFileHandler): void {
    if (!this.enabled) throw new KernelError(Errno.EOPNOTSUPP, `liveupdate_register_file_handler('${h.compatible}'): live update is disabled`);
    for (const op of ['canPreserve', 'preserve', 'unpreserve', 'retrieve', 'finish'] as const) {
      if (typeof h[op] !== 'function') throw new KernelError(Errno.EINVAL, `liveupdate_register_file_handler('${h.compatible}'): op '${op}' is missing`);
    }
    checkCompatible(h.compatible, LIVEUPDATE_HNDL_COMPAT_LENGTH, 'liveupdate_register_file_handler');
    if (this.handlerList.some((x) => x.compatible === h.compatible)) {
      throw new KernelError(Errno.EEXIST, `liveupdate_register_file_handler: compatible '${h.compatible}' is already registered`);
    }
    this.handlerList.push(h);
    this.flbRegistry.addHandler(h);
    for (const flb of h.flbs ?? []) this.flbRegistry.register(h, flb);
  }

  /**
   * liveupdate_unregister_file_handler (and its FLB links). Upstream pins the handler's module while any of its
   * files is preserved or incoming, so it cannot go then: EBUSY here.
   */
  unregisterFileHandler(h: LiveupdateFileHandler): void {
    const i = this.handlerList.indexOf(h);
    if (i < 0) return;
    const inUse = [...this.outgoing, ...this.incomingSessions].some((s) => s.files.some((f) => f.handler === h));
    if (inUse) throw new KernelError(Errno.EBUSY, `liveupdate_unregister_file_handler('${h.compatible}'): files of it are preserved or incoming`);
    this.handlerList.splice(i, 1);
    this.flbRegistry.removeHandler(h);
  }

  /** liveupdate_register_flb (see FlbRegistry.register); EOPNOTSUPP when live update is disabled. */
  registerFlb(h: LiveupdateFileHandler, flb: LiveupdateFlb): void {
    if (!this.enabled) throw new KernelError(Errno.EOPNOTSUPP, `liveupdate_register_flb('${flb.compatible}'): live update is disabled`);
    this.flbRegistry.register(h, flb);
  }

  unregisterFlb(h: LiveupdateFileHandler, flb: LiveupdateFlb): void {
    if (this.enabled) this.flbRegistry.unregister(h, flb);
  }

  /** liveupdate_flb_get_incoming: EOPNOTSUPP when disabled, else FlbRegistry.getIncoming's errors. */
  flbGetIncoming(flb: LiveupdateFlb): unknown {
    if (!this.enabled) throw new KernelError(Errno.EOPNOTSUPP, `liveupdate_flb_get_incoming('${flb.compatible}'): live update is disabled`);
    return this.flbRegistry.getIncoming(flb);
  }

  flbPutIncoming(flb: LiveupdateFlb): void {
    this.flbRegistry.putIncoming(flb);
  }

  /** liveupdate_flb_get_outgoing: EOPNOTSUPP when disabled; the current outgoing object. */
  flbGetOutgoing(flb: LiveupdateFlb): unknown {
    if (!this.enabled) throw new KernelError(Errno.EOPNOTSUPP, `liveupdate_flb_get_outgoing('${flb.compatible}'): live update is disabled`);
    return this.flbRegistry.getOutgoing(flb);
  }

  /** The outgoing subtree blob (luo-v5: `luo_ser`; luo-v1: the FDT page), 0 when live update is off. */
  get outgoingRoot(): number {
    return this.format.outgoingRoot;
  }

  /** Everything a report shows about LUO in this boot. */
  status(): LiveupdateStatus {
    const show = (s: LuoSession): SessionStatus => ({
      name: s.name,
      incoming: s.incoming,
      retrieved: s.retrieved,
      files: s.files.map((f) => ({ token: `0x${f.token.toString(16)}`, handler: f.handler.compatible, data: hex(f.serializedData), retrieveStatus: f.retrieveStatus })),
    });
    return {
      enabled: this.enabled,
      format: this.format.compatible,
      panic: this.panicReason,
      liveupdateNum: this.incomingNum + 1,
      deserializeError: this.deserializeError?.message,
      ...(this.outgoingError !== undefined ? { outgoingError: this.outgoingError } : {}),
      frozen: this.frozen,
      handlers: this.handlerList.map((h) => h.compatible),
      flbs: this.flbRegistry.states.map((s) => ({ compatible: s.flb.compatible, outgoing: s.outgoing.count, incoming: s.incoming.count, refused: s.incoming.refused })),
      outgoing: this.outgoing.map(show),
      incoming: this.incomingSessions.map(show),
    };
  }

  // ------------------------------------------------------------------------------------ boot: incoming state

  private earlyInit(): void {
    try {
      this.incoming = this.format.readIncoming();
      this.incomingNum = this.incoming && Number.isSafeInteger(this.incoming.liveupdateNum) ? this.incoming.liveupdateNum : 0;
      if (this.incoming?.flbError) this.log.error('luo', `refusing the incoming FLB page: ${this.incoming.flbError}`);
    } catch (e) {
      this.incoming = undefined;
      this.panicReason = describeError(e, { errno: true });
      this.log.error('luo', `PANIC: The incoming tree failed to initialize properly [${this.panicReason}], disabling live update`);
      this.bus.emit('plugin:error', { generation: this.info.generation, phase: Phase.BootLate, plugin: this.name, reason: this.panicReason, error: e });
    }
  }

  // ------------------------------------------------------------------------------------ /dev/liveupdate

  private openDevice(_proc: Process): KernelFile {
    if (this.inUse) throw new KernelError(Errno.EBUSY, `open(${LIVEUPDATE_DEV}): another process has it open (one opener at a time)`);
    this.inUse = true;
    const err = this.deserialize();
    if (err) {
      this.inUse = false;
      throw new KernelError(Errno.EIO, `open(${LIVEUPDATE_DEV}): the incoming sessions could not be rebuilt: ${err.message}`);
    }
    return new KernelFile(LIVEUPDATE_DEV, { ioctl: (_f, cmd, arg, proc) => this.ioctlDevice(cmd, arg, proc), release: () => (this.inUse = false) }, this);
  }

  private readonly deviceOps: ReadonlyArray<IoctlOp<never>> = [
    {
      num: LIVEUPDATE_IOCTL_CREATE_SESSION,
      name: 'LIVEUPDATE_IOCTL_CREATE_SESSION',
      size: LiveupdateCreateSessionStruct.size,
      minSize: LiveupdateCreateSessionStruct.size,
      execute: (u) => this.withFd(u, LiveupdateCreateSessionStruct.offsetOf('fd'), (raw) => this.createSession(raw)),
    },
    {
      num: LIVEUPDATE_IOCTL_RETRIEVE_SESSION,
      name: 'LIVEUPDATE_IOCTL_RETRIEVE_SESSION',
      size: LiveupdateRetrieveSessionStruct.size,
      minSize: LiveupdateRetrieveSessionStruct.size,
      execute: (u) => this.withFd(u, LiveupdateRetrieveSessionStruct.offsetOf('fd'), (raw) => this.retrieveSession(raw)),
    },
  ];

  /** The process of the ioctl being executed (for the commands that install fds). */
  private caller: Process | undefined;

  /** ioctl on the /dev/liveupdate fd: CREATE_SESSION, RETRIEVE_SESSION, with upstream's generic rules. */
  private ioctlDevice(cmd: number, arg: Uint8Array | undefined, proc: Process): void {
    this.caller = proc;
    try {
      this.asLuo(() => dispatch(this.deviceOps, LIVEUPDATE_CMD_BASE, cmd, arg, LIVEUPDATE_DEV));
    } finally {
      this.caller = undefined;
    }
  }

  /** Runs an ioctl with this plugin as the current one, so KHO attributes what it preserves to LUO. */
  private asLuo<T>(body: () => T): T {
    const outer = this.info.currentPlugin;
    this.info.currentPlugin = this.name;
    try {
      return body();
    } finally {
      this.info.currentPlugin = outer;
    }
  }

  /** Reserves an fd (O_CLOEXEC), makes the file from the struct's name bytes, replies with the fd and installs it. */
  private withFd(u: Ucmd, fdOffset: number, make: (name: Uint8Array) => KernelFile): void {
    const proc = this.caller!;
    const fd = proc.getUnusedFd();
    let file: KernelFile;
    try {
      file = make(u.cmd.subarray(8, 8 + LIVEUPDATE_SESSION_NAME_LENGTH));
    } catch (e) {
      proc.putUnusedFd(fd);
      throw e;
    }
    new DataView(u.cmd.buffer, u.cmd.byteOffset).setInt32(fdOffset, fd, true);
    respond(u, u.cmd.length);
    proc.fdInstall(fd, file, true);
  }

  /** luo_session_create (7.2 order): the name; the lock; room for one more record; the duplicate check. */
  private createSession(raw: Uint8Array): KernelFile {
    const len = raw.indexOf(0);
    if (len === 0 || len < 0) {
      throw new KernelError(Errno.EINVAL, `CREATE_SESSION: the name is ${len === 0 ? 'empty' : `${LIVEUPDATE_SESSION_NAME_LENGTH} bytes without a NUL`} (wanted 1..${LIVEUPDATE_SESSION_NAME_LENGTH - 1} bytes and a NUL)`);
    }
    const name = decodeName(raw.subarray(0, len), 'CREATE_SESSION');
    if (this.outgoingError !== undefined) throw new KernelError(Errno.EOPNOTSUPP, `CREATE_SESSION: ${this.outgoingError}`);
    this.checkUnfrozen('CREATE_SESSION');
    // 7.2 grows the records first and does not shrink them on EEXIST (spec section 8, item 9): kept as upstream.
    this.format.sessions.grow(this.outgoing.length + 1);
    if (this.outgoing.some((s) => s.name === name)) throw new KernelError(Errno.EEXIST, `CREATE_SESSION: a session named '${name}' exists`);
    const session = new LuoSession(name, false);
    session.store = this.format.newFileStore(name);
    this.outgoing.push(session);
    return this.sessionFile(session);
  }

  /** luo_session_retrieve: ENOENT for no incoming session of that name, EINVAL when it was retrieved already. */
  private retrieveSession(raw: Uint8Array): KernelFile {
    const len = raw.indexOf(0);
    let name: string | undefined;
    try {
      name = len < 0 ? undefined : decodeName(raw.subarray(0, len), 'RETRIEVE_SESSION');
    } catch {
      name = undefined;
    }
    this.checkUnfrozen('RETRIEVE_SESSION');
    const session = name === undefined ? undefined : this.incomingSessions.find((s) => s.name === name);
    if (!session) throw new KernelError(Errno.ENOENT, `RETRIEVE_SESSION: no incoming session named ${name === undefined ? '(a name without a NUL)' : `'${name}'`}`);
    if (session.retrieved) throw new KernelError(Errno.EINVAL, `RETRIEVE_SESSION: session '${name}' was retrieved already`);
    const file = this.sessionFile(session);
    session.retrieved = true;
    return file;
  }

  private sessionFile(session: LuoSession): KernelFile {
    return new KernelFile(`anon_inode:[luo_session] ${session.name}`, {
      ioctl: (_f, cmd, arg, proc) => this.ioctlSession(session, cmd, arg, proc),
      release: () => this.releaseSession(session),
    }, session);
  }

  // ------------------------------------------------------------------------------------ session fds

  private sessionOps(session: LuoSession, proc: Process): ReadonlyArray<IoctlOp<SessionKind>> {
    return [
      {
        num: LIVEUPDATE_SESSION_PRESERVE_FD,
        name: 'LIVEUPDATE_SESSION_PRESERVE_FD',
        size: LiveupdateSessionPreserveFdStruct.size,
        minSize: LiveupdateSessionPreserveFdStruct.size,
        kind: 'outgoing',
        execute: (u) => {
          const a = LiveupdateSessionPreserveFdStruct.decode(u.cmd);
          this.preserveFile(session, a.token, a.fd | 0, proc);
          respond(u, u.cmd.length);
        },
      },
      {
        num: LIVEUPDATE_SESSION_RETRIEVE_FD,
        name: 'LIVEUPDATE_SESSION_RETRIEVE_FD',
        size: LiveupdateSessionRetrieveFdStruct.size,
        minSize: LiveupdateSessionRetrieveFdStruct.size,
        kind: 'incoming',
        execute: (u) => {
          const a = LiveupdateSessionRetrieveFdStruct.decode(u.cmd);
          const fd = proc.getUnusedFd();
          let file: KernelFile;
          try {
            file = this.retrieveFile(session, a.token);
          } catch (e) {
            proc.putUnusedFd(fd);
            throw e;
          }
          new DataView(u.cmd.buffer, u.cmd.byteOffset).setInt32(LiveupdateSessionRetrieveFdStruct.offsetOf('fd'), fd, true);
          respond(u, u.cmd.length);
          proc.fdInstall(fd, file, true);
        },
      },
      {
        num: LIVEUPDATE_SESSION_FINISH,
        name: 'LIVEUPDATE_SESSION_FINISH',
        size: LiveupdateSessionFinishStruct.size,
        minSize: LiveupdateSessionFinishStruct.size,
        kind: 'incoming',
        execute: (u) => {
          this.finishSession(session);
          respond(u, u.cmd.length);
        },
      },
      {
        num: LIVEUPDATE_SESSION_GET_NAME,
        name: 'LIVEUPDATE_SESSION_GET_NAME',
        size: LiveupdateSessionGetNameStruct.size,
        minSize: LiveupdateSessionGetNameStruct.size,
        kind: 'any',
        execute: (u) => {
          const a = LiveupdateSessionGetNameStruct.decode(u.cmd);
          if (a.reserved !== 0) throw new KernelError(Errno.EINVAL, `GET_NAME: reserved is ${a.reserved} (wanted 0)`);
          LiveupdateSessionGetNameStruct.encodeInto(u.cmd, 0, { size: a.size, reserved: 0, name: session.name });
          respond(u, u.cmd.length);
        },
      },
    ];
  }

  private ioctlSession(session: LuoSession, cmd: number, arg: Uint8Array | undefined, proc: Process): void {
    const what = `[luo_session] ${session.name}`;
    this.asLuo(() =>
      dispatch(this.sessionOps(session, proc), LIVEUPDATE_CMD_SESSION_BASE, cmd, arg, what, (op) => {
        const ok = op.kind === 'any' || (op.kind === 'incoming' ? session.retrieved : !session.retrieved);
        if (!ok) throw new KernelError(Errno.EINVAL, `${what}: ${op.name} applies to ${op.kind} sessions (this one is ${session.retrieved ? 'incoming' : 'outgoing'})`);
        this.checkUnfrozen(op.name);
      }),
    );
  }

  /** Closing a session fd: an outgoing session is unpreserved and deleted; a retrieved one is finished (if it can be). */
  private releaseSession(session: LuoSession): void {
    if (this.frozen) {
      this.deferred.push(session);
      return;
    }
    if (session.retrieved) {
      try {
        this.finishSession(session);
      } catch (e) {
        this.log.warn('luo', `Unable to finish session [${session.name}] on release: ${describeError(e, { errno: true })}`);
        return;
      }
      this.incomingSessions.splice(this.incomingSessions.indexOf(session), 1);
      return;
    }
    this.unpreserveFiles(session);
    const i = this.outgoing.indexOf(session);
    if (i >= 0) this.outgoing.splice(i, 1);
    this.format.sessions.shrink(this.outgoing.length);
  }

  private checkUnfrozen(what: string): void {
    if (this.frozen) {
      throw new KernelError(Errno.EBUSY, `${what}: LUO is frozen for the kexec (upstream blocks on the session lock until the jump)`);
    }
  }

  // ------------------------------------------------------------------------------------ files (luo_file.c)

  private identity(f: LuoFile | { handler: LiveupdateFileHandler; file: KernelFile }): unknown {
    return f.handler.getId ? f.handler.getId(f.file!) : f.file;
  }

  private argsOf(f: LuoFile): LiveupdateFileOpArgs {
    return { handler: f.handler, retrieveStatus: f.retrieveStatus, file: f.file, serializedData: f.serializedData, privateData: f.privateData };
  }

  /** luo_preserve_file (7.2 order): token, room, fget, handler, identity, FLBs, preserve; undone in reverse on failure. */
  private preserveFile(session: LuoSession, token: bigint, fd: number, proc: Process): void {
    const what = `PRESERVE_FD(fd ${fd}, token 0x${token.toString(16)})`;
    if (session.files.some((f) => f.token === token)) throw new KernelError(Errno.EEXIST, `${what}: the token is used in session '${session.name}'`);
    const store = session.store!;
    store.grow(session.files.length + 1);
    try {
      withUnwind((u) => {
        let file: KernelFile;
        try {
          file = proc.fget(fd);
        } catch {
          throw new KernelError(Errno.EBADF, `${what}: not an open fd`);
        }
        u.push(() => file.put());
        const handler = this.handlerList.find((h) => h.canPreserve(file));
        if (!handler) throw new KernelError(Errno.ENOENT, `${what}: no file handler can preserve ${file.path}`);
        const id = handler.getId ? handler.getId(file) : file;
        if (this.preservedIds.has(id)) throw new KernelError(Errno.EBUSY, `${what}: ${file.path} is preserved already (by this or another session)`);
        this.preservedIds.set(id, file);
        u.push(() => this.preservedIds.delete(id));
        this.flbRegistry.filePreserve(handler);
        u.push(() => this.flbRegistry.fileUnpreserve(handler));
        const args: LiveupdateFileOpArgs = { handler, retrieveStatus: 0, file, serializedData: 0, privateData: undefined };
        handler.preserve(args);
        session.files.push({ handler, token, file, serializedData: args.serializedData, privateData: args.privateData, retrieveStatus: 0 });
      });
    } catch (e) {
      store.shrink(session.files.length);
      throw e;
    }
  }

  /** luo_file_unpreserve_files: last preserved first; then the records go. */
  private unpreserveFiles(session: LuoSession): void {
    const store = session.store!;
    while (session.files.length > 0) {
      const f = session.files[session.files.length - 1];
      f.handler.unpreserve(this.argsOf(f));
      this.flbRegistry.fileUnpreserve(f.handler);
      this.preservedIds.delete(this.identity(f));
      session.files.pop();
      store.shrink(session.files.length);
      f.file!.put();
    }
    store.destroy();
  }

  /** luo_retrieve_file: ENOENT for no such token; a failed retrieve's error is returned again without retrying. */
  private retrieveFile(session: LuoSession, token: bigint): KernelFile {
    const what = `RETRIEVE_FD(token 0x${token.toString(16)})`;
    const f = session.files.find((x) => x.token === token);
    if (!f) throw new KernelError(Errno.ENOENT, `${what}: no file with this token in session '${session.name}'`);
    if (f.retrieveStatus < 0) {
      const prev = findKernelError(f.retrieveError);
      throw new KernelError(-f.retrieveStatus, `${what}: retrieve failed before: ${prev ? prev.reason : describeError(f.retrieveError)}`);
    }
    if (f.retrieveStatus > 0) return f.file!.get();
    const args = this.argsOf(f);
    try {
      f.handler.retrieve(args);
      if (!args.file) throw new KernelError(Errno.EINVAL, `handler '${f.handler.compatible}' retrieved no file`);
    } catch (e) {
      const ke = findKernelError(e);
      f.retrieveStatus = -(ke?.errno ?? Errno.EIO);
      f.retrieveError = e;
      throw ke ? new KernelError(ke.errno, `${what}: ${ke.reason}`, { cause: e }) : e;
    }
    f.file = args.file;
    f.privateData = args.privateData;
    f.file.get(); // LUO's reference, until finish
    const id = this.identity(f);
    if (this.preservedIds.has(id)) this.log.warn('luo', `${what}: the retrieved file's identity is registered already`);
    else this.preservedIds.set(id, f.file);
    f.retrieveStatus = 1;
    return f.file;
  }

  /** luo_file_finish: every can_finish first (EBUSY, nothing changed), then finish last-preserved first. */
  private finishSession(session: LuoSession): void {
    if (session.files.length === 0) return;
    for (const f of session.files) {
      if (f.handler.canFinish && !f.handler.canFinish(this.argsOf(f))) {
        throw new KernelError(Errno.EBUSY, `FINISH: handler '${f.handler.compatible}' cannot finish token 0x${f.token.toString(16)} of session '${session.name}' yet`);
      }
    }
    while (session.files.length > 0) {
      const f = session.files[session.files.length - 1];
      f.handler.finish(this.argsOf(f));
      this.flbRegistry.fileFinish(f.handler);
      if (f.file) {
        this.preservedIds.delete(this.identity(f));
        f.file.put();
      }
      session.files.pop();
      session.store?.shrink(session.files.length);
    }
    session.store?.destroy();
    session.store = undefined;
  }

  // ------------------------------------------------------------------------------------ the kexec

  /** luo_session_serialize + luo_flb_serialize. On failure everything done is undone in reverse and the error thrown. */
  private serializeSessions(): void {
    this.frozen = true;
    this.format.beginSerialize();
    const it = this.format.sessions.iterator();
    const done: Array<{ session: LuoSession; ser: number }> = [];
    try {
      for (const session of this.outgoing) {
        const ser = it.reserve();
        if (ser === undefined) throw new KernelError(Errno.ENOSPC, `luo: no room for the record of session '${session.name}'`);
        try {
          this.freezeSession(session, ser);
        } catch (e) {
          it.prev();
          throw e;
        }
        this.writeName(ser, session.name);
        done.push({ session, ser });
      }
      this.format.commitSessions(this.outgoing.length);
      this.format.writeFlbs(this.flbRegistry.outgoingEntries());
    } catch (e) {
      for (const { session, ser } of done.reverse()) this.unfreezeSession(session, ser);
      this.format.undoSerialize();
      this.frozen = false;
      throw e;
    }
    this.serialized = done;
  }

  /** luo_file_freeze: each file's freeze then its record; a failure unfreezes the files frozen before it and clears the records. */
  private freezeSession(session: LuoSession, ser: number): void {
    if (session.files.length === 0) return;
    const store = session.store!;
    const w = store.writer();
    for (let i = 0; i < session.files.length; i++) {
      const f = session.files[i];
      try {
        const slot = w.reserve();
        if (slot === undefined) throw new KernelError(Errno.ENOSPC, `luo: no room for the record of token 0x${f.token.toString(16)}`);
        if (f.handler.freeze) {
          const args = this.argsOf(f);
          f.handler.freeze(args);
          f.serializedData = args.serializedData;
        }
        LuoFileSerStruct.write(this.ram, slot, { compatible: f.handler.compatible, data: f.serializedData, token: f.token });
      } catch (e) {
        this.log.warn('luo', `Freeze failed for token[0x${f.token.toString(16)}] handler[${f.handler.compatible}] err[${describeError(e, { errno: true })}]`);
        for (const g of session.files.slice(0, i)) g.handler.unfreeze?.(this.argsOf(g));
        store.clear();
        throw e;
      }
    }
    this.ram.writeU64(ser + OFF_SER_FILES, store.head);
    this.ram.writeU64(ser + OFF_SER_FILES + 8, session.files.length);
  }

  private unfreezeSession(session: LuoSession, ser: number): void {
    if (session.files.length > 0) {
      for (const f of session.files) f.handler.unfreeze?.(this.argsOf(f));
      session.store!.clear();
      this.ram.fill(ser + OFF_SER_FILES, 16, 0);
    }
    this.ram.fill(ser, LUO_SESSION_NAME_LEN, 0);
  }

  private writeName(ser: number, name: string): void {
    const bytes = new TextEncoder().encode(name);
    this.ram.fill(ser, LUO_SESSION_NAME_LEN, 0);
    this.ram.write(ser, bytes.subarray(0, LUO_SESSION_NAME_LEN - 1));
  }

  // ------------------------------------------------------------------------------------ the next kernel's first open

  /** luo_session_deserialize, once per boot; its result (an error or none) is kept and returned to every later open. */
  private deserialize(): KernelError | undefined {
    if (this.deserialized) return this.deserializeError;
    this.deserialized = true;
    const inc = this.incoming;
    if (!inc) return undefined;
    try {
      this.flbRegistry.setIncoming(inc.flbs, inc.flbError && `refused: ${inc.flbError}`);
      for (const ser of inc.sessionEntries()) this.deserializeSession(ser);
      inc.destroySessions();
      this.flbRegistry.checkIncomingCounts((s: FlbState) => this.incomingDependents(s));
    } catch (e) {
      inc.destroySessions();
      const ke = findKernelError(e) ?? new KernelError(Errno.EIO, describeError(e));
      this.deserializeError = ke;
      this.log.error('luo', `failed to rebuild the incoming sessions: ${ke.message}`);
      return ke;
    }
    return undefined;
  }

  private incomingDependents(s: FlbState): number {
    let n = 0;
    for (const session of this.incomingSessions) for (const f of session.files) if (this.flbRegistry.of(f.handler).includes(s)) n++;
    return n;
  }

  private deserializeSession(ser: number): void {
    const raw = this.ram.read(ser, LuoSessionSerStruct.size);
    const where = `session record at ${hex(ser)}`;
    const len = raw.subarray(0, LUO_SESSION_NAME_LEN).indexOf(0);
    if (len < 0) throw new KernelError(Errno.EINVAL, `${where}: the name has no NUL in its ${LUO_SESSION_NAME_LEN} bytes`);
    if (len === 0) throw new KernelError(Errno.EINVAL, `${where}: the name is empty`);
    const name = decodeName(raw.subarray(0, len), where);
    const { files, count } = LuoSessionSerStruct.decode(raw);
    if (this.incomingSessions.some((s) => s.name === name)) throw new KernelError(Errno.EEXIST, `${where}: a second session named '${name}'`);
    const session = new LuoSession(name, true);
    this.incomingSessions.push(session);
    if (files === 0) {
      if (count !== 0) this.log.warn('luo', `${where} ('${name}'): no file records but count ${count}`);
      return;
    }
    const store = this.incoming!.restoreFiles(files, count, name);
    try {
      for (const e of store.entries()) {
        const fraw = this.ram.read(e, LuoFileSerStruct.size);
        const fwhere = `file record ${session.files.length} of session '${name}' at ${hex(e)}`;
        const clen = fraw.subarray(0, LIVEUPDATE_HNDL_COMPAT_LENGTH).indexOf(0);
        if (clen < 0) throw new KernelError(Errno.EINVAL, `${fwhere}: the compatible has no NUL in its ${LIVEUPDATE_HNDL_COMPAT_LENGTH} bytes`);
        const rec = LuoFileSerStruct.decode(fraw);
        const handler = this.handlerList.find((h) => h.compatible === rec.compatible);
        if (!handler) throw new KernelError(Errno.ENOENT, `${fwhere}: No registered handler for compatible '${rec.compatible}'`);
        if (session.files.some((f) => f.token === rec.token)) throw new KernelError(Errno.EINVAL, `${fwhere}: token 0x${rec.token.toString(16)} is used twice (wanted tokens unique in a session)`);
        session.files.push({ handler, token: rec.token, file: undefined, serializedData: rec.data, privateData: undefined, retrieveStatus: 0 });
      }
      if (session.files.length !== count) {
        throw new KernelError(Errno.EINVAL, `session '${name}': File count mismatch: expected ${Number.isFinite(count) ? count : '>= 2^53'}, found ${session.files.length}`);
      }
      session.store = store;
    } catch (e) {
      session.files.length = 0;
      store.destroy();
      throw e;
    }
  }
}

/** A name's bytes as text: EINVAL when they are not UTF-8 (upstream compares bytes; the simulator keeps names as text). */
function decodeName(bytes: Uint8Array, what: string): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new KernelError(Errno.EINVAL, `${what}: the name is not valid UTF-8`);
  }
}

/** A session record's name for reports: the bytes up to the NUL (at most 64), undecodable bytes replaced. */
function recordName(ram: PhysicalMemory, ser: number): string {
  const raw = ram.read(ser, LUO_SESSION_NAME_LEN);
  const n = raw.indexOf(0);
  return new TextDecoder().decode(raw.subarray(0, n < 0 ? raw.length : n));
}

