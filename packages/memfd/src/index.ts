import 'reflect-metadata';

export * from './abi';
export { Memfd, type MemfdStat } from './memfd';
export { MemfdPlugin, memfdModule, type MemfdRestoreReport } from './memfd.plugin';
export {
  encodeMemfdTable,
  decodeMemfdTable,
  sealMemfdTable,
  memfdTableChecksum,
  memfdTableSize,
  type MemfdTableFile,
  type MemfdTableFolio,
} from './memfd.table';
export { crc32 } from './crc32';
export * from './luo/abi';
export { MemfdFs, SHMEM_HUGE_ORDER, findHead, type MemfdInode, type ShmemHuge } from './luo/memfd-file';
export { MemfdLuoHandler, memfdLuoModule, decodeFolioEntries, decodeMemfdLuoRecord, type MemfdLuoFolioEntry, type DecodedMemfdLuo } from './luo/memfd-luo';
