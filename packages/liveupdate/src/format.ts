import type { IncomingFlbEntry } from './flb';

/**
 * Where one session's file records live (`luo_file_ser`, 64 bytes each): a kho_block set in luo-v5, a 2-page area
 * in luo-v1. Outgoing stores grow with every preserve and write the records at the kexec; incoming stores list
 * what the previous kernel wrote.
 */
export interface FileStore {
  /** Outgoing: room for `count` records (ENOMEM, ENOSPC). */
  grow(count: number): void;
  /** Outgoing and incoming: drop what `count` records do not need. */
  shrink(count: number): void;
  /** A writer of records in order from the first slot; `reserve` is undefined when the room is used up. */
  writer(): { reserve(): number | undefined };
  /** Zeroes every record (after a failed freeze). */
  clear(): void;
  /** What `luo_session_ser.files` holds: the phys of the first block or of the area, 0 when there is none. */
  readonly head: number;
  /** Gives everything back: unpreserve + free (outgoing), restore + free (incoming). */
  destroy(): void;
  /** Incoming: the phys of every record, in order. */
  entries(): number[];
}

/** The outgoing session records (`luo_session_ser`, 80 bytes each). */
export interface SessionStore {
  /** Room for `count` sessions (luo-v5: ENOMEM, ENOSPC; luo-v1: ENOMEM past 819). */
  grow(count: number): void;
  shrink(count: number): void;
  /** Slots in session order; `prev` steps back (undoing a reservation). */
  iterator(): { reserve(): number | undefined; prev(): number | undefined };
}

/** What early boot found in the previous kernel's LUO state. */
export interface IncomingLuo {
  readonly liveupdateNum: number;
  /** The phys of every session record, in order. */
  sessionEntries(): number[];
  /** Gives back the session records' memory (upstream destroys the block set after deserialising). */
  destroySessions(): void;
  /** The file records a session points at. Throws EINVAL/ENOSPC for a bad chain or area (the blocks are given back). */
  restoreFiles(files: number, count: number, session: string): FileStore;
  /** The FLB page's phys (0: none). */
  readonly flbsPa: number;
  /**
   * The FLB entries, read at boot (the page is then given back: upstream never frees it, the lab does, as it does
   * KHO's own metadata); undefined when there was no page or it was refused (`flbError` says why).
   */
  readonly flbs: readonly IncomingFlbEntry[] | undefined;
  readonly flbError?: string;
}

/**
 * One generation of LUO's handover (luo-v5 or luo-v1): the records' places and the subtree. The session and file
 * logic is the same for every generation; only where the bytes go differs.
 */
export interface LuoFormat {
  /** The compatible string this generation writes and accepts. */
  readonly compatible: string;
  /** late_initcall: allocate the outgoing state and add the subtree. Throws (having undone everything) on failure. */
  setupOutgoing(liveupdateNum: number): void;
  readonly sessions: SessionStore;
  /** The blob of the outgoing `LUO` subtree (0 before setupOutgoing). */
  readonly outgoingRoot: number;
  /** A new, empty store for a new session's files. */
  newFileStore(session: string): FileStore;
  /** The kexec starts: nothing is handed over until commit. */
  beginSerialize(): void;
  /** Every session record is written: point the handover at them (`count` sessions). */
  commitSessions(count: number): void;
  /** Writes the FLB page. */
  writeFlbs(entries: readonly IncomingFlbEntry[]): void;
  /** The kexec was abandoned after commit: hand over nothing again. */
  undoSerialize(): void;
  /** early_initcall: the previous kernel's state, or undefined when it left none. Throws (the "panic") when it is damaged. */
  readIncoming(): IncomingLuo | undefined;
}
