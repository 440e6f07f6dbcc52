import 'reflect-metadata';

export { main, runCli, runCliAsync, buildProgram, EXIT, type CliIo } from './main';
export { kernelImage, machineFor, TRACKER_KINDS, isTrackerKind, type TrackerKind } from './system';
export { runDemo, runFirstHalf, runSecondHalf, coldBootFreePages, DEFAULT_DEMO, type DemoOptions, type DemoReport, type FirstHalf, type SecondHalf } from './demo/run';
export { KhoTest, khoTestModule, KhoTestConfig, KHO_TEST_ID, KHO_TEST_LOG_REGION, KHO_TEST_LOG_CMDLINE, KhoTestStateDesc, type KhoTestState, type KhoTestRestore } from './demo/kho-test';
export { writeHandoverImage, loadHandoverImage, type ImageExtras, type LoadedImage } from './handover';
export { inspectImage, inspectLoaded, formatInspection, type Inspection } from './inspect';
