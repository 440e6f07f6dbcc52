export { FakeTracker, FakeEarlyAllocator, khoFakesModule } from './fakes';
