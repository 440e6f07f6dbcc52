export { BareKho, BareMachine, type BareHandover, type BareKernel } from './bare';
