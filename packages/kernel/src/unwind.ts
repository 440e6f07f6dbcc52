import { KernelBug } from './errno';
/**
 * The kernel's goto ladder as a stack of undo steps: each completed step pushes its undo; when a later step
 * fails, the undos run in reverse order and the original error propagates. A step's undo that itself throws
 * is a bug: it is collected and reported with the original error rather than hiding it.
 */
export class Unwind {
  private readonly undos: Array<() => void> = [];
  private done = false;

  /** Records the undo of a step that has just succeeded. */
  push(undo: () => void): void {
    if (this.done) throw new KernelBug('Unwind.push after the ladder was committed or unwound');
    this.undos.push(undo);
  }

  /** Number of undo steps recorded so far. */
  get depth(): number {
    return this.undos.length;
  }

  /** Forgets every undo: the multi-step operation succeeded. */
  commit(): void {
    this.undos.length = 0;
    this.done = true;
  }

  /** Runs every recorded undo, last first. Returns the errors thrown by undos (normally none). */
  unwind(): unknown[] {
    const errors: unknown[] = [];
    while (this.undos.length > 0) {
      const undo = this.undos.pop()!;
      try {
        undo();
      } catch (e) {
        errors.push(e);
      }
    }
    this.done = true;
    return errors;
  }
}

/**
 * Runs `body` with a fresh {@link Unwind}. If `body` throws, every undo it pushed runs in reverse order and the
 * error is rethrown (with failed undos attached as `cause` information); otherwise the ladder is committed.
 * Returns what `body` returns.
 */
export function withUnwind<T>(body: (u: Unwind) => T): T {
  const u = new Unwind();
  let result: T;
  try {
    result = body(u);
  } catch (e) {
    const undoErrors = u.unwind();
    if (undoErrors.length > 0) {
      throw new AggregateError([e, ...undoErrors], `unwinding after a failure also failed ${undoErrors.length} time(s)`);
    }
    throw e;
  }
  u.commit();
  return result;
}
