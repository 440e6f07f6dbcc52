export {
  FDT_MAGIC,
  FDT_BEGIN_NODE,
  FDT_END_NODE,
  FDT_PROP,
  FDT_NOP,
  FDT_END,
  FDT_TAGSIZE,
  FDT_VERSION,
  FDT_LAST_COMP_VERSION,
  FDT_FIRST_SUPPORTED_VERSION,
  FDT_MAX_DEPTH,
  FDT_MAX_NAME_LEN,
  FDT_HEADER,
  FDT_HEADER_SIZE,
  FDT_RESERVE_ENTRY,
  FDT_RESERVE_ENTRY_SIZE,
  FDT_RESERVE_ALIGN,
  FDT_PROP_HEADER,
  FDT_PROP_HEADER_SIZE,
  FdtHeaderStruct,
  FdtReserveEntryStruct,
  FdtPropHeaderStruct,
  type FdtField,
} from './abi';
export { FdtNode, isValidNodeName, isValidPropName, checkNodeName, checkPropName } from './node';
export { encodeFdt, fdtSize, type EncodeFdtOptions } from './encode';
export { decodeFdt, FDT_DEFAULT_MAX_NODES, type DecodeFdtOptions } from './decode';
export { formatDts, type FormatDtsOptions } from './format';
