import 'reflect-metadata';

export {
  KHO_BLOCK_SIZE,
  KHO_BLOCK_HEADER_SIZE,
  KHO_BLOCK_ENTRY_BYTES,
  KHO_MAX_BLOCKS,
  KHO_BLOCK_COMPATIBLE,
  KhoBlockHeaderStruct,
  entriesPerBlock,
} from './abi';
export { KhoBlockSet, KhoBlockIterator, type KhoBlockBackend } from './block-set';
export { KhoBlocks, khoBlockModule } from './kho-blocks';
