export * from './uapi';
export * from './luo';
