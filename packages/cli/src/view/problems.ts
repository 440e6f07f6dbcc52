import { Errno, KernelError, describeError } from '@kho/kernel';

/** One thing found wrong while decoding a handover: where it is, what was found, what was wanted. */
export interface Problem {
  readonly where: string;
  readonly what: string;
  readonly wanted: string;
}

/**
 * Splits "what was found (wanted X)" (or "what (note; wanted X)", the note staying with what) into its two
 * halves; a message without "wanted" in its closing parenthesis wants `fallback`.
 */
export function splitWanted(message: string, fallback: string): { what: string; wanted: string } {
  const m = /^(.*?)\s*\((?:([^()]*); )?wanted ([^()]*(?:\([^()]*\)[^()]*)*)\)\s*$/s.exec(message);
  return m ? { what: m[2] ? `${m[1]} (${m[2]})` : m[1], wanted: m[3] } : { what: message, wanted: fallback };
}

/**
 * The problems of one decode. In strict mode the first one throws, as a KernelError(EINVAL) with the message of
 * the check that failed (the next kernel's refusal); otherwise each is recorded and decoding goes on with what
 * does not depend on the damaged part.
 */
export class Problems {
  readonly list: Problem[] = [];

  constructor(readonly strict: boolean) {}

  /** Records a problem (or throws in strict mode). `message` is "what (wanted …)". */
  add(where: string, message: string, fallbackWanted = 'a valid structure'): void {
    if (this.strict) throw new KernelError(Errno.EINVAL, message);
    this.list.push({ where, ...splitWanted(message, fallbackWanted) });
  }

  /**
   * Records a problem that the next kernel would not refuse the handover for (a subsystem refuses its own
   * state): listed in lenient mode, and left to the decoded data's `error` in strict mode.
   */
  soft(where: string, what: string, wanted: string): void {
    if (!this.strict) this.list.push({ where, what, wanted });
  }

  /** Runs `body`; when it throws, records the error under `where` and returns undefined. */
  attempt<T>(where: string, body: () => T, fallbackWanted?: string): T | undefined {
    try {
      return body();
    } catch (e) {
      if (this.strict) throw e instanceof KernelError ? e : new KernelError(Errno.EINVAL, describeError(e), { cause: e });
      this.add(where, describeError(e), fallbackWanted);
      return undefined;
    }
  }
}
