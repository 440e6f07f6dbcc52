export type { KhoGeneration } from './generation';
export { KHO_GENERATIONS, generationById, generationByCompatible, selectGeneration } from './registry';
export { khoV1, khoV1Karr } from './kho-v1';
export { khoV2 } from './kho-v2';
export { khoV3 } from './kho-v3';
export { khoV4, khoV4Composite } from './kho-v4';
