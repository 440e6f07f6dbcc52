import 'reflect-metadata';

export {
  KHO_VMALLOC_SIZE,
  KHO_VMALLOC_ALLOC,
  KHO_VMALLOC_HUGE_VMAP,
  KHO_VMALLOC_FLAGS_MASK,
  KHO_VMALLOC_CHUNK_SIZE,
  KHO_VMALLOC_CHUNK_ENTRIES,
  KhoVmallocStruct,
  KhoVmallocChunkStruct,
  encodeKhoVmalloc,
  decodeKhoVmalloc,
  encodeKhoVmallocChunk,
  decodeKhoVmallocChunk,
  type KhoVmallocDesc,
  type KhoVmallocChunk,
} from './abi';
export {
  Vmalloc,
  VMALLOC_START,
  VMALLOC_END,
  VMALLOC_SIZE,
  VMALLOC_HUGE_ORDER,
  VMALLOC_GUARD_SIZE,
  VM_ALLOC,
  VM_HUGE_VMAP,
  VM_IOREMAP,
  VM_MAP,
  VM_USERMAP,
  VM_FLAGS_KNOWN,
  type VmArea,
  type VmallocOptions,
} from './vmalloc';
export { KhoVmalloc } from './preserve';
export { vmallocModule } from './module';
