import 'reflect-metadata';

export { Errno, KernelError, KernelBug, errnoName, isKernelError, describeError, findKernelError } from './errno';
export { Unwind, withUnwind } from './unwind';
export { Phase, BOOT_PHASES, type BootPhase } from './phases';
export {
  MachineBus,
  LifecycleBus,
  MemoryPicture,
  type BusEvents,
  type BusEventName,
  type BootKind,
  type KernelBootEvent,
  type KernelUpEvent,
  type KernelDownEvent,
  type PhaseStartEvent,
  type PhaseEndEvent,
  type PluginErrorEvent,
  type PluginDisabledEvent,
  type KexecEvent,
  type PreservationEvent,
  type MemoryRun,
  type MemoryMap,
  type MemoryMoment,
  type MemoryMapEvent,
  type ProgressEvent,
} from './bus';
export { KernelLog, formatLogLine, type LogLine, type LogLevel } from './log';
export { CommandLine } from './cmdline';
export { BootParams, NextBootParams } from './boot-params';
export { KernelPlugin, registerPerBoot, type KernelModule, type PluginReport } from './plugin';
export { Machine, type BootOptions, type LandOptions } from './machine';
export {
  Kernel,
  KernelInfo,
  orderPlugins,
  type KexecOptions,
  type PhaseReport,
  type PluginOutcome,
  type UpdateState,
} from './kernel';
export { parseSize, formatBytes, formatSizeExact, hex } from './units';
export { seededRandom } from './bench/index';
export { crc32c } from './crc32c';
export { SeededByteStream, SeededWords, seededBytes, crc32, crc32Zeros, crc32Portable } from './random';
