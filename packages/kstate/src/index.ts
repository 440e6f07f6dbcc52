import 'reflect-metadata';

export * from './abi';
export {
  describe,
  describeState,
  u8,
  u16,
  u32,
  u64,
  i8,
  i16,
  i32,
  i64,
  bool,
  phys,
  str,
  bytes,
  struct,
  ptr,
  array,
  folio,
  vmallocBuf,
  physRange,
  custom,
  instanceIdOf,
  isDescription,
  SCALAR_SIZE,
  type ArrayOptions,
  type CustomCodec,
  type DescId,
  type DescribeOptions,
  type Description,
  type Field,
  type FieldKind,
  type InstanceId,
  type NamedInstance,
  type ScalarKind,
  type Subsection,
  type UpgradeStep,
  type VersionOptions,
} from './model';
export type { FieldReader, FieldWriter } from './wire';
export { crc32c } from '@kho/kernel';
export { schemaOf, KSTATE_SCHEMA_FORMAT, type DescSchema, type FieldSchema, type SchemaSnapshot } from './schema';
export { compat, type CompatReport } from './compat';
export { dumpStream, dumpIncoming, type Json } from './dump';
export { FolioRef, VmallocRef, PhysRangeRef, CustomBytes, DecodedRecord, type MemoryRef } from './decode';
export { openStream, readSegments, parseStream, IncomingStream, type IncomingSection, type RamReader, type Segment } from './stream';
export type { RestoreReport } from './restore';
export { KStateBackend, KhoBackend, type KStateVmalloc } from './backend';
export { KState, type SaveStats, type FinishReport, type UnrestoredSection } from './kstate';
export { KStatePlugin, kstateModule } from './plugin';
export { ReserveMemRegionState, KstateReserveMemHandover, kstateReserveMemModule, type ReserveMemState } from './reserve-mem';
