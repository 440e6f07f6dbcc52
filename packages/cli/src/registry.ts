import { KernelBug } from '@kho/kernel';
import type { TrackerDescriptor } from '@kho/kho-core';
import { radixTracker } from '@kho/radix-tracker';
import { bitmapArrayTracker, bitmapChunksTracker } from '@kho/kho-array';

/**
 * Every preserved-memory tracker the command knows, the default first. Every list the command shows or accepts
 * (`--tracker`, scenarios' `tracker:`, `kho inspect`, `kho compat`) comes from here: a new tracker is a package
 * exporting a TrackerDescriptor and one line here.
 */
export const TRACKERS: readonly TrackerDescriptor[] = [radixTracker, bitmapChunksTracker, bitmapArrayTracker];

/** The tracker kinds, as `--tracker` takes them. */
export const TRACKER_KINDS = TRACKERS.map((t) => t.kind) as [string, ...string[]];
export type TrackerKind = string;

/** True when `name` is a tracker kind of {@link TRACKERS}. */
export function isTrackerKind(name: unknown): name is TrackerKind {
  return typeof name === 'string' && TRACKER_KINDS.includes(name);
}

/** The descriptor of tracker `kind`. Throws for a kind that is not in the registry (callers check first). */
export function trackerDescriptor(kind: TrackerKind): TrackerDescriptor {
  const t = TRACKERS.find((x) => x.kind === kind);
  if (!t) throw new KernelBug(`no tracker '${kind}' in the registry`);
  return t;
}
