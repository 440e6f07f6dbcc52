export { u8, u16, u32, u64, u64big, be16, be32, be64, char, bytes, reserved, pad, array, bits64, type Field, type ValueOf } from './field';
export { Layout, struct, nested, type Fields, type StructValue, type FieldInfo, type ByteSource, type ByteSink } from './layout';
export { layoutTable, offsetTable } from './table';
