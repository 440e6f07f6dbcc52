import type { LiveupdateFileHandler } from './handler';
import type { FileStore } from './format';
import type { KernelFile } from './vfs/file';

/** One preserved file of a session (upstream `struct luo_file`). */
export interface LuoFile {
  readonly handler: LiveupdateFileHandler;
  readonly token: bigint;
  /** Outgoing: the preserved file (LUO holds a reference). Incoming: the retrieved file, once retrieved. */
  file: KernelFile | undefined;
  serializedData: number;
  privateData: unknown;
  /** 0 never retrieved, 1 retrieved, −errno when retrieve failed (the error is kept in `retrieveError`). */
  retrieveStatus: number;
  retrieveError?: unknown;
}

/**
 * A session (upstream `struct luo_session`): a named, ordered set of preserved files. Outgoing sessions are made
 * by CREATE_SESSION and handed over at the kexec; incoming ones are rebuilt from the previous kernel's records at
 * the first open of /dev/liveupdate and handed to user space by RETRIEVE_SESSION.
 */
export class LuoSession {
  readonly files: LuoFile[] = [];
  /** Set by RETRIEVE_SESSION on an incoming session; session ioctls use it to tell incoming from outgoing. */
  retrieved = false;
  /** Its file records: created with the session (outgoing); restored at deserialisation (incoming, when it has files). */
  store: FileStore | undefined;

  constructor(
    readonly name: string,
    readonly incoming: boolean,
  ) {}
}
