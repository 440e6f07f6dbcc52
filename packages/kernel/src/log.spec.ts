import { MachineBus } from './bus';
import { KernelLog, formatLogLine, type LogLine } from './log';

describe('KernelLog', () => {
  it('keeps every line in order with its generation, level and subsystem, and publishes each on the bus', () => {
    const bus = new MachineBus();
    const heard: LogLine[] = [];
    bus.on('log', (l) => heard.push(l));
    const before = performance.now();
    const log = new KernelLog(bus, 3);
    expect(log.lines).toEqual([]);
    log.debug('mm', 'd');
    log.info('kho', 'i');
    log.warn('mm', 'w');
    log.error('kho', 'e');
    const elapsed = performance.now() - before;
    expect(log.lines.map((l) => [l.generation, l.level, l.subsystem, l.message])).toEqual([
      [3, 'debug', 'mm', 'd'],
      [3, 'info', 'kho', 'i'],
      [3, 'warn', 'mm', 'w'],
      [3, 'error', 'kho', 'e'],
    ]);
    expect(heard).toEqual(log.lines);
    // ms counts from this log's creation: never negative, never more than the time the test took
    for (const l of log.lines) {
      expect(l.ms).toBeGreaterThanOrEqual(0);
      expect(l.ms).toBeLessThanOrEqual(elapsed);
    }
  });

  it('filters by minimum level and, optionally, by subsystem', () => {
    const log = new KernelLog(new MachineBus(), 1);
    log.debug('mm', 'd');
    log.info('kho', 'i');
    log.warn('mm', 'w');
    log.error('kho', 'e');
    const messages = (ls: LogLine[]): string[] => ls.map((l) => l.message);
    expect(messages(log.filter('debug'))).toEqual(['d', 'i', 'w', 'e']);
    expect(messages(log.filter('info'))).toEqual(['i', 'w', 'e']);
    expect(messages(log.filter('warn'))).toEqual(['w', 'e']);
    expect(messages(log.filter('error'))).toEqual(['e']);
    expect(messages(log.filter('debug', 'mm'))).toEqual(['d', 'w']);
    expect(messages(log.filter('info', 'kho'))).toEqual(['i', 'e']);
    expect(messages(log.filter('error', 'mm'))).toEqual([]);
    expect(messages(log.filter('debug', 'nobody'))).toEqual([]);
  });
});

describe('formatLogLine', () => {
  const line = (level: LogLine['level'], ms: number): LogLine => ({ generation: 1, ms, level, subsystem: 'kho', message: 'preserved 4 folios' });

  it.each<[LogLine['level'], number, string]>([
    ['info', 1.234, '[    0.001234] kho: preserved 4 folios'],
    ['debug', 0, '[    0.000000] kho: preserved 4 folios'],
    ['warn', 2500, '[    2.500000] WARNING: kho: preserved 4 folios'],
    ['error', 123456789, '[123456.789000] ERROR: kho: preserved 4 folios'],
  ])('%s at %p ms', (level, ms, text) => {
    expect(formatLogLine(line(level, ms))).toBe(text);
  });
});
