/**
 * Sorted, non-overlapping [base, end) ranges with union and subtraction. Additions are buffered and merged on
 * demand, so a million reservations cost two native sorts rather than a million array insertions.
 */
export class RangeSet {
  private bases: number[] = [];
  private ends: number[] = [];
  private pendingBases: number[] = [];
  private pendingEnds: number[] = [];

  /** Adds [base, base + size). */
  add(base: number, size: number): void {
    if (size <= 0) return;
    this.pendingBases.push(base);
    this.pendingEnds.push(base + size);
  }

  /** Removes [base, base + size) wherever it overlaps. */
  remove(base: number, size: number): void {
    // An empty or negative span would otherwise split a range at `base` into two touching (or overlapping) pieces.
    if (size <= 0) return;
    this.normalize();
    const end = base + size;
    const nb: number[] = [];
    const ne: number[] = [];
    for (let i = 0; i < this.bases.length; i++) {
      const b = this.bases[i];
      const e = this.ends[i];
      if (e <= base || b >= end) {
        nb.push(b);
        ne.push(e);
        continue;
      }
      if (b < base) {
        nb.push(b);
        ne.push(base);
      }
      if (e > end) {
        nb.push(end);
        ne.push(e);
      }
    }
    this.bases = nb;
    this.ends = ne;
  }

  /** The merged ranges, ascending. */
  ranges(): Array<[number, number]> {
    this.normalize();
    return this.bases.map((b, i) => [b, this.ends[i]]);
  }

  /** Total bytes covered within [min, max). */
  bytesWithin(min = 0, max = Infinity): number {
    this.normalize();
    let n = 0;
    for (let i = 0; i < this.bases.length; i++) {
      const b = Math.max(this.bases[i], min);
      const e = Math.min(this.ends[i], max);
      if (e > b) n += e - b;
    }
    return n;
  }

  /** Whether any byte of [base, base + size) is covered. */
  overlaps(base: number, size: number): boolean {
    this.normalize();
    const i = this.firstEndingAfter(base);
    return i < this.bases.length && this.bases[i] < base + size;
  }

  /** Whether every byte of [base, base + size) is covered. */
  covers(base: number, size: number): boolean {
    this.normalize();
    const i = this.firstEndingAfter(base);
    return i < this.bases.length && this.bases[i] <= base && this.ends[i] >= base + size;
  }

  get count(): number {
    this.normalize();
    return this.bases.length;
  }

  private firstEndingAfter(addr: number): number {
    let lo = 0;
    let hi = this.bases.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid] <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private normalize(): void {
    if (this.pendingBases.length === 0) return;
    // Union of intervals from independently sorted starts and ends: the covered set is where more intervals
    // have started than ended.
    const starts = Float64Array.from([...this.bases, ...this.pendingBases]).sort();
    const ends = Float64Array.from([...this.ends, ...this.pendingEnds]).sort();
    const nb: number[] = [];
    const ne: number[] = [];
    let i = 0;
    let j = 0;
    let depth = 0;
    let openAt = 0;
    while (i < starts.length || j < ends.length) {
      if (i < starts.length && starts[i] <= ends[j]) {
        if (depth === 0) {
          // Touching ranges merge: reopen the previous one.
          if (ne.length > 0 && ne[ne.length - 1] === starts[i]) {
            openAt = nb.pop()!;
            ne.pop();
          } else openAt = starts[i];
        }
        depth++;
        i++;
      } else {
        depth--;
        if (depth === 0) {
          nb.push(openAt);
          ne.push(ends[j]);
        }
        j++;
      }
    }
    this.bases = nb;
    this.ends = ne;
    this.pendingBases = [];
    this.pendingEnds = [];
  }
}
