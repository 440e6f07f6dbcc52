import 'reflect-metadata';

export {
  SETUP_KHO,
  KHO_DATA_SIZE,
  KHO_FDT_SIZE,
  KHO_FDT_COMPATIBLE,
  KHO_PAGE_MAGIC,
  KHO_SCRATCH_ENTRY_SIZE,
  KHO_SCRATCH_ALIGN,
  KHO_KEXEC_METADATA_SUBTREE,
  KHO_KEXEC_METADATA_VERSION,
  KhoDataStruct,
  KhoScratchStruct,
  KhoKexecMetadataStruct,
  PROP_PRESERVED_MEMORY_MAP,
  PROP_PRESERVED_MEMORY_MAP_CRC,
  PROP_SUB_FDT,
  PROP_SUB_FDT_V1,
  PROP_BLOB_SIZE,
  encodeKhoData,
  decodeKhoData,
  encodeScratchArray,
  decodeScratchArray,
  type KhoData,
  type ScratchArea,
} from './abi';
export { EarlyAllocator, Tracker, tooManyBlocks, type BlockVisitor, type TrackerStats, type TrackerDescriptor, type IncomingMap, type IncomingWalkOptions, type ReadIncomingOptions } from './ports';
export { Kho, type KhoStats, type RetrievedSubtree } from './kho';
export { KhoPlugin } from './plugin';
export { KhoState } from './state';
export { splitOrder, splitBlocks, KHO_MAX_BLOCK_ORDER, type NodeOfPfn } from './split';
export { scratchSizes, placeScratch, overlappingScratch, type ScratchSizes } from './scratch';
export { validateHandover, readScratch, checkOutsideScratch, pagesCrc, mapCrc, checkMapCrc, KHO_MAX_SCRATCH_AREAS, KHO_MAX_INCOMING_BLOCKS, type IncomingHandover } from './incoming';
export { readKexecMetadata, writeKexecMetadata, type KexecMetadata } from './kexec-metadata';
export { buildRootFdt, addSubtreeNode, readSubtreeNode, findSubtreeByBlob, rootGeneration, readableGenerations, subtreeAddressProp, type SubtreeRef } from './root-fdt';
export { stampOrder, hasStamp, writeStamp, clearStamp } from './stamp';
export { KHO_GENERATIONS, generationById, generationByCompatible, selectGeneration, khoV1, khoV1Karr, khoV2, khoV3, khoV4, khoV4Composite, type KhoGeneration } from './generations';
export { khoModule } from './module';
