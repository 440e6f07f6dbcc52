import 'reflect-metadata';

export * from './abi';
export { LiveupdateFileHandler, type LiveupdateFileOpArgs, type LiveupdateFlb, type LiveupdateFlbOpArgs } from './handler';
export { FlbRegistry, type FlbState, type IncomingFlbEntry } from './flb';
export { Liveupdate, LIVEUPDATE_DEV, LUO_FORMATS, type LuoFormatName, type LiveupdateStatus, type SessionStatus } from './liveupdate';
export { liveupdateModule } from './module';
export { KernelFile, type FileOperations } from './vfs/file';
export { Process, type Mapping, O_RDONLY, O_WRONLY, O_RDWR, O_CLOEXEC, SEEK_SET, SEEK_CUR, SEEK_END, F_ADD_SEALS, F_GET_SEALS } from './vfs/process';
export { Vfs } from './vfs/vfs';
export {
  luoOpenDevice,
  luoCreateSession,
  luoRetrieveSession,
  luoPreserveFd,
  luoRetrieveFd,
  luoSessionFinish,
  luoGetSessionName,
  nameBytes,
  errnoOf,
} from './client';
export { decodeLuo, type DecodedLuo, type DecodedLuoSession, type DecodedLuoFile, type LuoDecodeMemory, type LuoDecodeOptions, type LuoFileDecoder } from './decode';
