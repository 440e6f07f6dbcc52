import { MAX_PAGE_ORDER, PAGE_SIZE, type Folio } from '@kho/physmem';
import { array, bool, bytes, describe, folio, phys, str, u32, u64, vmallocBuf } from '@kho/kstate';
import { RESERVE_MEM_NAME_MAX } from '@kho/memblock';
import { MEMFD_NAME_MAX } from '@kho/memfd';

/**
 * What the scenario's workloads share: their configuration, the handover state every strategy writes its items
 * into (one kstate description, `scenario_workload`), and the shapes of their results.
 */

/** Most kstate objects a generation registers, and the largest payload of one (a folio of order 10). */
export const WORKLOAD_OBJECTS_MAX = 100_000;
export const WORKLOAD_PAYLOAD_MAX = PAGE_SIZE * 2 ** MAX_PAGE_ORDER;
/** A sparse memfd file holds data in every other chunk of this size (the odd ones); the rest are holes. */
export const WORKLOAD_SPARSE_CHUNK = 64 * 1024;

// ------------------------------------------------------------------------------------------ configuration

/** What one generation's kernel makes and hands over (from the scenario's `preserve`), injected per boot. */
export const ScenarioWorkloadConfig = Symbol('ScenarioWorkloadConfig');
export interface ScenarioWorkloadConfig {
  /** The generation this kernel is (recorded in the state as the writer). */
  readonly generation: number;
  /** Every item's seed derives from this one. */
  readonly seed: number;
  readonly vmalloc: ReadonlyArray<{ readonly size: number; readonly huge: boolean }>;
  readonly reserveMem: ReadonlyArray<{ readonly name: string; readonly size: number; readonly align: number }>;
  readonly kstate?: { readonly objects: number; readonly size: number };
  readonly memfd: ReadonlyArray<{ readonly name: string; readonly size: number; readonly sparse: boolean }>;
}

/** The seed of item `index` of `kind` (a string hash with shifts and exact multiplies: no Math.imul). */
export function itemSeed(seed: number, kind: string, index: number): number {
  let s = seed >>> 0;
  for (const c of `${kind}#${index}`) s = (s * 31 + c.charCodeAt(0)) >>> 0;
  return s;
}

// ------------------------------------------------------------------------------------------ handover state

export interface VmallocEntry {
  seed: number;
  size: bigint;
  huge: boolean;
  /** The area: its address here; kstate hands it over as a kho_vmalloc descriptor and maps it anew. */
  buf: number;
}

export interface RegionEntry {
  name: string;
  start: number;
  size: bigint;
  seed: number;
  /** The generation that filled it (an earlier one when carried forward unchanged). */
  writtenBy: number;
}

export interface FileEntry {
  name: string;
  size: bigint;
  sparse: boolean;
  seed: number;
}

/** The workload's handover state (kstate `scenario_workload`, instance 0). */
export interface WorkloadState {
  generation: number;
  seed: number;
  vmalloc: VmallocEntry[];
  regions: RegionEntry[];
  files: FileEntry[];
  /** kstate objects registered (instances 0..objects-1 of `scenario_object`) and their payload size. */
  objects: number;
  objectSize: number;
}

const VmallocEntryDesc = describe<VmallocEntry>({ name: 'scenario_vmalloc', version: 1, fields: [u32('seed'), u64('size'), bool('huge'), vmallocBuf('buf')] });
const RegionEntryDesc = describe<RegionEntry>({
  name: 'scenario_region',
  version: 1,
  fields: [str('name', RESERVE_MEM_NAME_MAX), phys('start'), u64('size'), u32('seed'), u32('writtenBy')],
});
const FileEntryDesc = describe<FileEntry>({ name: 'scenario_file', version: 1, fields: [str('name', MEMFD_NAME_MAX), u64('size'), bool('sparse'), u32('seed')] });

/** The description of the workload's handover state. */
export const WorkloadStateDesc = describe<WorkloadState>({
  name: 'scenario_workload',
  version: 1,
  fields: [u32('generation'), u32('seed'), array('vmalloc', VmallocEntryDesc), array('regions', RegionEntryDesc), array('files', FileEntryDesc), u32('objects'), u32('objectSize')],
});

/** One kstate object of the workload. */
export interface WorkloadObject {
  /** (writer generation << 32) | index. */
  id: bigint;
  name: string;
  /** 16 seeded bytes. */
  tag: Uint8Array;
  /** Payload bytes, in `payload` (a folio of the smallest order that holds them; null when 0). */
  size: number;
  /** CRC32C of the payload bytes. */
  csum: number;
  payload: Folio | null;
}

/** The description of a workload object (kstate `scenario_object`, instance = its index). */
export const WorkloadObjectDesc = describe<WorkloadObject>({
  name: 'scenario_object',
  version: 1,
  fields: [u64('id'), str('name', 32), bytes('tag', 16), u32('size'), u32('csum'), folio('payload')],
});

// ------------------------------------------------------------------------------------------ results

/** What a kernel made and handed over (the harness compares it with what the next one verifies). */
export interface WorkloadPreserved {
  readonly vmalloc: { readonly areas: number; readonly bytes: number };
  /** Regions handed over: those filled now and those carried forward unchanged from an earlier generation. */
  readonly reserveMem: { readonly regions: number; readonly bytes: number; readonly carried: number };
  readonly kstate: { readonly objects: number; readonly bytes: number };
  readonly memfd: { readonly files: number; readonly bytes: number };
}

/** What the next kernel found of one workload. */
export interface WorkloadCheck {
  /** Items the handover state lists. */
  readonly listed: number;
  /** Items that came back with every byte (every field) as expected. */
  readonly verified: number;
  /** Bytes compared. */
  readonly bytes: number;
  /** What did not verify, one line each (`vmalloc area 0 (4.00 MiB): byte 7 is 0x00 (wanted 0x3c)`). */
  readonly problems: readonly string[];
}

/** kstate objects: also the fields kstate's RestoreReports say it restored and left at their default. */
export interface KstateCheck extends WorkloadCheck {
  readonly fieldsRestored: number;
  readonly fieldsDefaulted: number;
}

/** What the restore half found, from the handover state alone. */
export interface WorkloadRestore {
  /** The generation that wrote the state (as the state says). */
  readonly writtenBy: number;
  readonly vmalloc: WorkloadCheck;
  readonly reserveMem: WorkloadCheck;
  readonly kstate: KstateCheck;
  readonly memfd: WorkloadCheck;
}

/** What generate made in this kernel (tests use it to damage data before the jump). */
export interface WorkloadOutgoing {
  readonly vmalloc: readonly number[];
  readonly regions: readonly string[];
  readonly objects: readonly WorkloadObject[];
  readonly files: readonly string[];
}
