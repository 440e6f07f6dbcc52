import { accessSync, constants, statSync } from 'node:fs';
import { totalmem } from 'node:os';
import { dirname, resolve } from 'node:path';
import { CommandLine, Errno, KernelError, describeError, formatBytes, formatSizeExact } from '@kho/kernel';
import { Memmap, PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { scratchSizes } from '@kho/kho-core';
import { KERNEL_IMAGE_SIZE, STRUCT_PAGE_SIZE, parseReserveMem } from '@kho/memblock';

/**
 * Checks made before a run starts, so that bad input is refused in a second with one line naming the option
 * or file and what was wanted, not after minutes of work. Each throws KernelError (the command exits 2).
 */

const bad = (message: string, errno = Errno.EINVAL): never => {
  throw new KernelError(errno, message);
};

/** Granularity of a machine's RAM per NUMA node (physmem splits RAM into nodes of whole 4 MiB). */
export const NODE_RAM_ALIGN = 4 * 2 ** 20;

/**
 * The smallest machine the demo runs on: scratch (2 MiB-aligned areas, at least three), the kernel image, the
 * memmap and the self-test's log all need room besides what is preserved.
 */
export const MIN_DEMO_RAM = 64 * 2 ** 20;

/** Bytes of page descriptors (the memmap) the host needs per simulated page. */
let descriptorBytes: number | undefined;
function bytesPerPage(): number {
  descriptorBytes ??= new Memmap(new PhysicalMemory({ ranges: [{ start: 0, size: NODE_RAM_ALIGN, node: 0 }] })).bytesPerPage;
  return descriptorBytes;
}

/**
 * The host must hold the simulated machine's page descriptors in memory (a typed array per column, one entry per
 * page): refused when they would take more than half of the host's memory. `what` names the option or file.
 */
export function checkHostHolds(ram: number, what: string): void {
  const need = (ram / PAGE_SIZE) * bytesPerPage();
  const have = totalmem();
  if (need > have / 2) {
    bad(`${what} ${formatSizeExact(ram)} needs ${formatBytes(need)} of page descriptors on this host, which has ${formatBytes(have)} of memory (wanted at most ${Math.floor((have / 2 / bytesPerPage()) * PAGE_SIZE / 2 ** 30)}G of simulated RAM)`, Errno.ENOMEM);
  }
}

/** `--ram` and `--nodes`: a machine the kernels can boot on, and the host can hold. */
export function checkMachineSize(ram: number, nodes: number): void {
  if (ram < MIN_DEMO_RAM) bad(`--ram ${formatSizeExact(ram)} is too small (wanted at least ${formatSizeExact(MIN_DEMO_RAM)})`);
  if (ram % (nodes * NODE_RAM_ALIGN) !== 0) {
    bad(`--ram ${formatSizeExact(ram)} does not split into --nodes ${nodes} of whole ${formatSizeExact(NODE_RAM_ALIGN)} (wanted a multiple of ${formatSizeExact(nodes * NODE_RAM_ALIGN)})`);
  }
  checkHostHolds(ram, '--ram');
}

/** `--mem`: some folios, whole pages, at most half of `--ram` (scratch and the kernel need the rest). */
export function checkDemoMem(mem: number, ram: number): void {
  if (mem <= 0) bad(`--mem ${mem} preserves nothing (wanted at least one page, ${PAGE_SIZE} bytes)`);
  if (mem % PAGE_SIZE !== 0) bad(`--mem ${mem} is not a multiple of the page size (wanted a multiple of ${PAGE_SIZE})`);
  if (mem > ram / 2) bad(`--mem ${formatSizeExact(mem)} is more than half of --ram ${formatSizeExact(ram)} (wanted at most ${formatSizeExact(ram / 2)}: scratch and the kernel need the rest)`);
}

/**
 * `--cmdline`: what every kernel parses, parsed now: quoting, `kho=` (a boolean), `kho_scratch=` (a size
 * triple or a percentage), `reserve_mem=` (size:align:name).
 */
export function checkCmdline(text: string, what = '--cmdline', machine?: { ram: number; nodes: number }): void {
  let sizes: ReturnType<typeof scratchSizes> | undefined;
  let c: CommandLine;
  try {
    c = new CommandLine(text);
    c.getBool('kho', true);
    const scratch = c.get('kho_scratch');
    if (scratch !== undefined && !scratch.endsWith('%')) sizes = scratchSizes(scratch, Array.from({ length: machine?.nodes ?? 1 }, (_, i) => i), () => 0);
    else if (scratch !== undefined) scratchSizes(scratch, [0], () => 0);
    parseReserveMem(c.getAll('reserve_mem'));
  } catch (e) {
    bad(`${what} '${text}': ${describeError(e)}`);
  }
  // The next kernel boots from scratch alone: its image needs one area that holds it, and its page descriptors
  // the rest (memblock's own accounting: STRUCT_PAGE_SIZE bytes per page).
  if (sizes && machine) {
    const memmap = (machine.ram / PAGE_SIZE) * STRUCT_PAGE_SIZE;
    const all = [sizes.lowmem, sizes.global, ...sizes.pernode];
    const total = all.reduce((a, b) => a + b, 0);
    if (Math.max(...all) < KERNEL_IMAGE_SIZE || total < KERNEL_IMAGE_SIZE + memmap) {
      bad(
        `${what} '${text}': scratch of ${all.map(formatSizeExact).join(' + ')} cannot hold the next kernel, which boots in scratch alone (wanted one area of at least ${formatSizeExact(KERNEL_IMAGE_SIZE)} for its image, and ${formatBytes(KERNEL_IMAGE_SIZE + memmap)} in all with its page descriptors)`,
      );
    }
  }
}

/**
 * An output file: its folder must exist and be writable, and the path must not be a folder. `what` names the
 * option (`--report`, `--image`, `--out`).
 */
export function checkWritable(file: string, what: string): void {
  const path = resolve(file);
  const dir = dirname(path);
  let st;
  try {
    st = statSync(dir);
  } catch {
    bad(`${what} ${file}: the folder ${dir} does not exist (wanted a file in an existing folder)`, Errno.ENOENT);
  }
  if (!st!.isDirectory()) bad(`${what} ${file}: ${dir} is not a folder (wanted a file in an existing folder)`, Errno.ENOENT);
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    bad(`${what} ${file}: the folder ${dir} is not writable (wanted a folder this user may write in)`, Errno.EPERM);
  }
  let target;
  try {
    target = statSync(path);
  } catch {
    return; // a new file
  }
  if (target.isDirectory()) bad(`${what} ${file} is a folder (wanted a file name)`);
  try {
    accessSync(path, constants.W_OK);
  } catch {
    bad(`${what} ${file} exists and is not writable (wanted a file this user may replace)`, Errno.EPERM);
  }
}
