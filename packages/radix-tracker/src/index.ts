import 'reflect-metadata';

export * from './abi';
export { encodeKey, decodeKey, keyOrder, tableIndex, leafBit } from './key';
export { RadixTracker, treeNodePfns, incomingTreeNodePfns, readIncomingTree, validateIncomingTree, type IncomingBlocks, type IncomingTreeShape } from './radix-tree';
export { radixTrackerModule, radixTracker } from './module';
