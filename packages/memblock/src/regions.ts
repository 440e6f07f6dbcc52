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
    // A range that starts where the last one ended extends it: a KHO boot reserves millions of blocks in address
    // order, mostly back to back, and keeping them as a few runs spares arrays of millions of entries.
    const last = this.pendingEnds.length - 1;
    if (last >= 0 && this.pendingEnds[last] === base) {
      this.pendingEnds[last] = base + size;
      return;
    }
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
    const pb = this.pendingBases;
    const n = pb.length;
    if (n === 0) return;
    // Pending ranges usually arrive in a few ascending runs (a KHO boot reserves its blocks in the tracker's walk
    // order: by order, then by address): merge the runs, and the ranges already held, by base in one pass. Only
    // input in many runs pays for sorting.
    const runs: number[] = [0];
    for (let i = 1; i < n; i++) {
      if (pb[i] < pb[i - 1]) {
        runs.push(i);
        if (runs.length > MAX_RUNS) return this.normalizeSorting();
      }
    }
    runs.push(n);
    const k = runs.length - 1;
    const pos = runs.slice(0, k);
    const pe = this.pendingEnds;
    const hb = this.bases;
    const he = this.ends;
    let h = 0;
    const nb: number[] = [];
    const ne: number[] = [];
    for (;;) {
      // The next range by base: the held list's head or the lowest head among the runs.
      let best = -1;
      let bestBase = h < hb.length ? hb[h] : Infinity;
      for (let r = 0; r < k; r++) {
        if (pos[r] < runs[r + 1] && pb[pos[r]] < bestBase) {
          best = r;
          bestBase = pb[pos[r]];
        }
      }
      if (bestBase === Infinity) break;
      let end: number;
      if (best < 0) end = he[h++];
      else end = pe[pos[best]++];
      // Overlapping and touching ranges merge.
      const last = ne.length - 1;
      if (last >= 0 && bestBase <= ne[last]) {
        if (end > ne[last]) ne[last] = end;
      } else {
        nb.push(bestBase);
        ne.push(end);
      }
    }
    this.bases = nb;
    this.ends = ne;
    this.pendingBases = [];
    this.pendingEnds = [];
  }

  /** normalize for input in many runs: the union from independently sorted starts and ends. */
  private normalizeSorting(): void {
    // Union of intervals from independently sorted starts and ends: the covered set is where more intervals
    // have started than ended.
    const starts = Float64Array.from(this.bases.concat(this.pendingBases)).sort();
    const ends = Float64Array.from(this.ends.concat(this.pendingEnds)).sort();
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

/** Above this many ascending runs of pending ranges, normalize sorts instead of merging the runs. */
const MAX_RUNS = 32;
