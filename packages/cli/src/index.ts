import 'reflect-metadata';

export { main, runCli, buildProgram, EXIT, type CliIo } from './main';
export { kernelImage, machineFor } from './system';
export { runDemo, runFirstHalf, runSecondHalf, coldBootFreePages, DEFAULT_DEMO, type DemoOptions, type DemoReport, type FirstHalf, type SecondHalf } from './demo/run';
export { KhoTest, khoTestModule, KhoTestConfig, KHO_TEST_SUBTREE, KHO_TEST_COMPATIBLE, type KhoTestRestore } from './demo/kho-test';
export { writeHandoverImage, loadHandoverImage, type ImageExtras, type LoadedImage } from './handover';
export { inspectImage, inspectLoaded, formatInspection, type Inspection } from './inspect';
