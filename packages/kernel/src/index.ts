import 'reflect-metadata';

export { Errno, KernelError, KernelBug, errnoName, isKernelError } from './errno';
export { Unwind, withUnwind } from './unwind';
export { Phase, BOOT_PHASES, type BootPhase } from './phases';
export { LifecycleBus, type BusEvents } from './bus';
export { KernelLog, formatLogLine, type LogLine, type LogLevel } from './log';
export { CommandLine } from './cmdline';
export { BootParams, NextBootParams } from './boot-params';
export { KernelPlugin, registerPerBoot, type KernelModule, type PluginReport } from './plugin';
export { Machine, type BootOptions } from './machine';
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
export { SeededByteStream, seededBytes, crc32, crc32Zeros, crc32Portable } from './random';
