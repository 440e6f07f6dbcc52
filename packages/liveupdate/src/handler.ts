import type { KernelFile } from './vfs/file';

/**
 * The argument block of every file-handler operation but `canPreserve` (upstream `struct
 * liveupdate_file_op_args`, 7.2). Handlers read what they need and set what the operation produces.
 */
export interface LiveupdateFileOpArgs {
  readonly handler: LiveupdateFileHandler;
  /** 0: never retrieved; 1: retrieved; below 0: retrieve failed with that errno (negated). For canFinish and finish. */
  readonly retrieveStatus: number;
  /** The file: the one being preserved; in the next kernel, the one `retrieve` made (undefined before). */
  file: KernelFile | undefined;
  /**
   * The handler's u64 handle, written into the handover (`luo_file_ser.data`): set by preserve (and freeze),
   * read by retrieve and finish. A phys below 2^53; a hostile value at or above 2^53 reads as Infinity.
   */
  serializedData: number;
  /** The handler's own object for this file (never handed over). */
  privateData: unknown;
}

/**
 * A file handler (upstream `struct liveupdate_file_handler` + its ops, 7.2): what LUO calls to preserve files of
 * one kind and to rebuild them in the next kernel. Register one as a plugin contribution: a module registers the
 * class under the {@link LiveupdateFileHandler} token and LUO registers every one at boot, in image order (or call
 * `Liveupdate.registerFileHandler`). Operations throw a KernelError with the errno upstream's would return.
 */
export const LiveupdateFileHandler = Symbol('LiveupdateFileHandler');
export interface LiveupdateFileHandler {
  /** The string written into `luo_file_ser.compatible` and matched exactly in the next kernel: 1..47 bytes. */
  readonly compatible: string;
  /** FLBs this handler depends on; LUO registers them with it right after the handler. */
  readonly flbs?: readonly LiveupdateFlb[];
  /** Cheap yes/no: can this handler preserve `file`? The first handler (registration order) that says yes takes it. */
  canPreserve(file: KernelFile): boolean;
  /** Saves the file's state into preserved memory; sets `serializedData` (and optionally `privateData`). */
  preserve(args: LiveupdateFileOpArgs): void;
  /** Undoes preserve (the session was closed before the kexec). */
  unpreserve(args: LiveupdateFileOpArgs): void;
  /** At the kexec, in preservation order: the last update; may change `serializedData`. An error aborts the kexec. */
  freeze?(args: LiveupdateFileOpArgs): void;
  /** Undoes freeze when the kexec is abandoned after this file froze. */
  unfreeze?(args: LiveupdateFileOpArgs): void;
  /** In the next kernel: rebuilds the file from `serializedData` and sets `args.file`. An error is remembered. */
  retrieve(args: LiveupdateFileOpArgs): void;
  /** Before any finish: false vetoes the session's finish (EBUSY). */
  canFinish?(args: LiveupdateFileOpArgs): boolean;
  /** Final cleanup; `retrieveStatus` says whether retrieve ran (0 never: discard the preserved data). */
  finish(args: LiveupdateFileOpArgs): void;
  /** Identity for "preserved once" (default: the file object); memfd uses the inode. */
  getId?(file: KernelFile): unknown;
}

/** The argument block of the FLB operations (upstream `struct liveupdate_flb_op_args`). */
export interface LiveupdateFlbOpArgs {
  readonly flb: LiveupdateFlb;
  /** The u64 handed over (`luo_flb_ser.data`): set by preserve, read by retrieve. */
  data: number;
  /** The live shared object: set by preserve and retrieve, given to unpreserve and finish. */
  obj: unknown;
}

/**
 * A File-Lifecycle-Bound object (upstream `struct liveupdate_flb`): state shared by every file of the handlers
 * that depend on it. The first dependent file preserved runs `preserve`, the last unpreserved runs `unpreserve`;
 * in the next kernel the first `getIncoming` runs `retrieve` and the last dependent file finished runs `finish`.
 */
export interface LiveupdateFlb {
  /** Written into `luo_flb_ser.name` and matched exactly: 1..47 bytes, unique among registered FLBs. */
  readonly compatible: string;
  preserve(args: LiveupdateFlbOpArgs): void;
  unpreserve(args: LiveupdateFlbOpArgs): void;
  retrieve(args: LiveupdateFlbOpArgs): void;
  finish(args: LiveupdateFlbOpArgs): void;
}
