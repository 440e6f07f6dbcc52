import 'reflect-metadata';

export { Memblock, subtract, intersect, type MemblockRecord, type MemblockRegion } from './memblock';
export { MemblockPlugin, memblockModule, KERNEL_LOAD_ADDR, KERNEL_IMAGE_SIZE, STRUCT_PAGE_SIZE } from './plugin';
export { RangeSet } from './regions';
export { ReserveMem, ReserveMemHandover, parseReserveMem, type ReserveMemRequest, type ReserveMemRegion, type ReserveMemRecord } from './reserve-mem';
export { MemblockFdtHandover, memblockFdtHandoverModule, readMemblockFdt } from './fdt-handover';
export * from './abi';
