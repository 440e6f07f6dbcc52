/**
 * physmem/fill-4g's child process: fills and checksums `bytes` of a new machine's RAM as the demo does and prints
 * the times as one JSON line. In a process of its own, so that gigabytes of RAM chunks do not stay behind in the
 * benchmark runner's heap (and slow every benchmark after it) until the collector gets to them.
 */
import 'reflect-metadata';
import { SeededByteStream, crc32, crc32Zeros } from '@kho/kernel';
import { PhysicalMemory } from '../src/index';

const bytes = Number(process.argv[2]);
const ram = new PhysicalMemory({ ranges: [{ start: 0, size: bytes, node: 0 }] });
const stream = new SeededByteStream(1);
const t0 = performance.now();
for (const view of ram.writeViews(0, bytes)) stream.fill(view);
const t1 = performance.now();
let h = 0;
ram.readSpans(0, bytes, (view, length) => {
  h = view ? crc32(view, h) : crc32Zeros(length, h);
});
const t2 = performance.now();
const round = (n: number): number => Math.round(n * 10) / 10;
process.stdout.write(
  `${JSON.stringify({
    bytes,
    fillMs: round(t1 - t0),
    checksumMs: round(t2 - t1),
    fillGBs: round(bytes / 1e6 / (t1 - t0)),
    checksumGBs: round(bytes / 1e6 / (t2 - t1)),
    hostBytes: ram.hostBytes,
    checksum: h,
  })}\n`,
);
