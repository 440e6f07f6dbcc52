import { MachineBus, Phase } from '@kho/kernel';
import { etaText, followDemo, followScenario, type Progress } from './progress';

describe('progress', () => {
  it.each([
    [500, 0.5, ''], // too early to say
    [2000, 0.5, 'ETA 2s'],
    [30_000, 0.25, 'ETA 1m30s'],
    [5000, 0, ''],
    [5000, 1, ''],
  ])('after %d ms at %d: %j', (ms, fraction, text) => expect(etaText(ms, fraction)).toBe(text));

  it('follows a demo and a scenario from their bus alone', () => {
    const seen: string[] = [];
    const p: Progress = { update: (v, step) => seen.push(`${v} ${step}`), stop: () => undefined };
    const bus = new MachineBus();
    const stop = followDemo(bus, p, 1000);
    bus.emit('progress', { generation: 1, step: 'generate', done: 400, total: 1000 });
    bus.emit('phase:start', { generation: 1, phase: Phase.Prepare });
    bus.emit('phase:start', { generation: 2, phase: Phase.Restore });
    stop();
    bus.emit('phase:start', { generation: 2, phase: Phase.Finish });
    expect(seen).toEqual(['400 generate 400 B of 1000 B', '400 generation 1: prepare', '1000 generation 2: restore']);
    seen.length = 0;
    const stop2 = followScenario(bus, p, 3);
    bus.emit('kernel:up', { generation: 2, ms: 1, disabled: [] });
    bus.emit('phase:start', { generation: 2, phase: Phase.Restore });
    bus.emit('progress', { generation: 2, step: 'generate', done: 512, total: 1024 });
    stop2();
    expect(seen).toEqual(['1 generation 2/3: booted', '1 generation 2/3: restore', '1.5 generation 2/3: generate 512 B']);
  });
});
