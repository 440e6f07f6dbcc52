import { injectable } from 'tsyringe';
import { Errno, KernelError, seededRandom } from '@kho/kernel';

/** When page allocations should fail (the kernel's fail_page_alloc fault attributes, simplified). */
export interface FaultConfig {
  /** Fail exactly the Nth call from now (1-based). */
  readonly failNth?: number;
  /** Fail every Nth call from now. Combined with `probability`, a call must pass both (as the kernel's interval). */
  readonly everyNth?: number;
  /** Chance in [0, 1] that a call fails, drawn from a PRNG seeded with `seed` (default 1 with everyNth, else 0). */
  readonly probability?: number;
  /** Seed of the PRNG (default 1), so a run with the same seed fails the same calls. */
  readonly seed?: number;
  /** Stop after this many injected failures (default: no limit). */
  readonly times?: number;
}

/**
 * Fault injection for the page allocator: the allocator asks {@link FaultInjector.shouldFail} at the start of
 * every allocation and fails it with ENOMEM when told to. Per boot; disarmed until configured.
 */
@injectable()
export class FaultInjector {
  /** Calls to shouldFail since this boot (or the last reset). */
  calls = 0;
  /** Failures injected since this boot (or the last reset). */
  injected = 0;
  /**
   * Called at the start of every page allocation, before the fault decision, with the call's number since this
   * boot (or the last reset): for tools that stop a path at a given allocation (the kexec-at-any-moment sweep).
   * What it throws leaves the allocator's state untouched and reaches the allocation's caller. Kept by `reset`.
   */
  onCall: ((call: number) => void) | undefined;

  private armed = false;
  private base = 0;
  private failNth = 0;
  private everyNth = 0;
  private probability = 0;
  private random: () => number = Math.random;
  private timesLeft = Infinity;

  /**
   * Arms the injector (replacing any earlier configuration); call counting for `failNth` and `everyNth` starts
   * now. Throws EINVAL for a value out of range.
   */
  configure(opts: FaultConfig): void {
    const positive = (v: number | undefined, what: string): number => {
      if (v === undefined) return 0;
      if (!Number.isSafeInteger(v) || v < 1) throw new KernelError(Errno.EINVAL, `fault injection: ${what} ${v} is not a positive integer`);
      return v;
    };
    const failNth = positive(opts.failNth, 'failNth');
    const everyNth = positive(opts.everyNth, 'everyNth');
    const probability = opts.probability ?? (everyNth > 0 ? 1 : 0);
    if (!(probability >= 0 && probability <= 1)) {
      throw new KernelError(Errno.EINVAL, `fault injection: probability ${opts.probability} is not in [0, 1]`);
    }
    if (opts.times !== undefined && (!Number.isSafeInteger(opts.times) || opts.times < 0)) {
      throw new KernelError(Errno.EINVAL, `fault injection: times ${opts.times} is not a non-negative integer`);
    }
    if (opts.seed !== undefined && !Number.isSafeInteger(opts.seed)) {
      throw new KernelError(Errno.EINVAL, `fault injection: seed ${opts.seed} is not an integer`);
    }
    this.failNth = failNth;
    this.everyNth = everyNth;
    this.probability = probability;
    this.random = seededRandom(opts.seed ?? 1);
    this.timesLeft = opts.times ?? Infinity;
    this.base = this.calls;
    this.armed = failNth > 0 || probability > 0;
  }

  /** Disarms the injector and zeroes its counters. */
  reset(): void {
    this.armed = false;
    this.calls = 0;
    this.injected = 0;
    this.base = 0;
    this.failNth = 0;
    this.everyNth = 0;
    this.probability = 0;
    this.timesLeft = Infinity;
  }

  /** True when the injector is configured to fail some calls. */
  get isArmed(): boolean {
    return this.armed;
  }

  /** Counts one call; returns true when this call must fail. */
  shouldFail(): boolean {
    this.calls++;
    this.onCall?.(this.calls);
    if (!this.armed) return false;
    if (this.timesLeft <= 0) return false;
    const n = this.calls - this.base;
    // failNth stands alone; otherwise a call must pass the interval gate and then the probability draw.
    const fail =
      n === this.failNth ||
      (this.probability > 0 && (this.everyNth === 0 || n % this.everyNth === 0) && (this.probability >= 1 || this.random() < this.probability));
    if (!fail) return false;
    this.injected++;
    this.timesLeft--;
    return true;
  }
}

/**
 * Parses the value of the `fail_page_alloc=` kernel parameter: `<everyNth>,<probability%>,<times>[,<seed>]`, the
 * kernel's fault attributes (interval, probability, times) without `space`. A call fails when it is an Nth call
 * (everyNth 0 or 1: every call is) and then wins a draw of `probability` percent (0..100); times -1 means no
 * limit. `fail_page_alloc=1,10,-1,42` fails 10% of allocations with seed 42; `fail_page_alloc=100,100,5` fails
 * every 100th allocation, five times. Returns the configuration; throws EINVAL for anything malformed.
 */
export function parseFailPageAlloc(text: string): FaultConfig {
  const parts = text.split(',');
  const bad = (why: string): KernelError =>
    new KernelError(Errno.EINVAL, `fail_page_alloc='${text}': ${why} (wanted <everyNth>,<probability%>,<times>[,<seed>])`);
  if (parts.length < 3 || parts.length > 4) throw bad(`${parts.length} fields`);
  const num = (s: string, what: string): number => {
    if (!/^-?\d+$/.test(s.trim())) throw bad(`${what} '${s}' is not an integer`);
    return Number(s);
  };
  const everyNth = num(parts[0], 'everyNth');
  const percent = num(parts[1], 'probability');
  const times = num(parts[2], 'times');
  const seed = parts.length === 4 ? num(parts[3], 'seed') : undefined;
  if (everyNth < 0) throw bad(`everyNth ${everyNth} is negative`);
  if (percent < 0 || percent > 100) throw bad(`probability ${percent} is not in 0..100`);
  if (times < -1) throw bad(`times ${times} is below -1`);
  return {
    ...(everyNth > 1 ? { everyNth } : {}),
    probability: percent / 100,
    ...(times >= 0 ? { times } : {}),
    ...(seed !== undefined ? { seed } : {}),
  };
}
