export { FakeTracker, FakeEarlyAllocator, khoFakesModule } from './fakes';
export { trackerContract, type TrackerContractCase, type TrackerUnderTest } from './tracker-contract';
