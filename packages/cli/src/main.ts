import 'reflect-metadata';
import { writeFileSync } from 'node:fs';
import { Argument, Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { CommandLine, Errno, KernelError, formatBytes, formatSizeExact, hex, parseSize, describeError, type MachineBus } from '@kho/kernel';
import { registeredBenches } from '@kho/kernel/bench';
import { formatBenchTable, loadBenchFiles, readBaseline, runBenches, workspaceRoot, type BenchLine, type BenchSummary } from './bench';
import { PAGE_SIZE } from '@kho/physmem';
import { DEFAULT_DEMO, runDemo, runFirstHalf, runSecondHalf, type DemoOptions, type DemoReport, type SecondHalf } from './demo/run';
import { loadHandoverImage, writeHandoverImage } from './handover';
import { inspectImage, writeInspection, writeInspectionJson } from './inspect';
import { compareKernels, compatMatrix, formatCompat, formatMatrix, kernelFromArg } from './compat';
import { demoReportData } from './report/demo-report';
import { scenarioReportData } from './report/scenario-report';
import { RunRecorder } from './report/recorder';
import { createProgress, followDemo, followScenario } from './progress';
import { readScenario, scenarioDemand } from './scenario/schema';
import { fuzzHandovers, fuzzHandoversParallel, type FuzzResult } from './reliability/fuzz';
import { sweepAnytime, sweepFaults } from './reliability/sweeps';
import { ANYTIME_PATHS } from './reliability/anytime-paths';
import { FAULT_PATHS } from './reliability/fault-paths';
import { defaultJobs } from './reliability/pool';
import { runSoak } from './reliability/soak';
import { formatAnytimeSweep, formatFaultSweep, formatSoakResult, formatSoakSample } from './reliability/format';
import { runScenario, type ScenarioResult } from './scenario/run';
import { renderImageExplorer, renderRunExplorer } from './explore/page';
import { TRACKER_KINDS, isTrackerKind, trackerDescriptor, type TrackerKind } from './registry';
import { checkCmdline, checkDemoMem, checkHostHolds, checkMachineSize, checkWritable } from './checks';
import { isVmmImageInfo, vmmBootCommand, vmmDemoCommand, vmmKexecCommand, type VmmFlags } from './vmm/commands';
import { formatLuoMade, formatLuoVerified } from './scenario/luo';

/** Exit codes of every command. */
export const EXIT = { OK: 0, FAILED: 1, BAD_INPUT: 2 } as const;

const VERSION = '0.1.0';

function sizeArg(what: string) {
  return (text: string): number => {
    try {
      return parseSize(text, what);
    } catch (e) {
      throw new InvalidArgumentError(describeError(e));
    }
  };
}

function intArg(what: string, min: number, max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!/^-?\d+$/.test(text.trim()) || n < min || n > max) throw new InvalidArgumentError(`${what} '${text}' (wanted an integer ${min}..${max})`);
    return n;
  };
}

interface DemoFlags {
  seed: number;
  mem: number;
  ram: number;
  nodes: number;
  cmdline: string;
  tracker: TrackerKind;
  json?: boolean;
}

const bad = (message: string): never => {
  throw new KernelError(Errno.EINVAL, message);
};

/** Checks every demo option before anything runs (sizes, the host, the command line). Throws KernelError. */
function demoOptions(f: DemoFlags): DemoOptions {
  checkMachineSize(f.ram, f.nodes);
  checkDemoMem(f.mem, f.ram);
  checkCmdline(f.cmdline, '--cmdline', { ram: f.ram, nodes: f.nodes });
  if (!new CommandLine(f.cmdline).getBool('kho', true)) bad(`--cmdline '${f.cmdline}' has kho=off: the demo preserves nothing (wanted kho=on, or no kho=)`);
  return { seed: f.seed, mem: f.mem, ram: f.ram, nodes: f.nodes, cmdline: f.cmdline, tracker: f.tracker };
}

function addDemoOptions(cmd: Command): Command {
  return cmd
    .option('--seed <n>', 'seed of the random folio orders and contents', intArg('--seed', 0, 2 ** 32 - 1), DEFAULT_DEMO.seed)
    .addOption(new Option('--mem <size>', 'bytes of folios to preserve (K, M, G suffixes)').argParser(sizeArg('--mem')).default(DEFAULT_DEMO.mem, formatSizeExact(DEFAULT_DEMO.mem)))
    .addOption(new Option('--ram <size>', 'RAM of the simulated machine').argParser(sizeArg('--ram')).default(DEFAULT_DEMO.ram, formatSizeExact(DEFAULT_DEMO.ram)))
    .option('--nodes <n>', 'NUMA nodes', intArg('--nodes', 1, 64), DEFAULT_DEMO.nodes)
    .option('--cmdline <text>', 'kernel command line of every boot (e.g. "kho_scratch=64M,64M,64M")', DEFAULT_DEMO.cmdline)
    .addOption(trackerOption().default('radix'));
}

/** `--tracker`: the preserved-memory tracker of the kernels. */
function trackerOption(): Option {
  return new Option('--tracker <name>', 'preserved-memory tracker: the kho-v2 radix tree, or kho-v1 bitmaps as a chunk list or through a KHO array').choices(
    TRACKER_KINDS,
  );
}

function printSecondHalf(s: SecondHalf, out: string[]): void {
  out.push(`next kernel (generation ${s.generation}): ${s.khoBoot ? 'KHO boot' : `cold boot${s.revivalError ? ` (revival refused: ${s.revivalError})` : ''}`}`);
  if (s.handover) {
    const from = s.handover.previousRelease ? `; exec from ${s.handover.previousRelease} (count ${s.handover.kexecCount})` : '';
    out.push(`  handover: ${s.handover.compatible}${from}`);
  }
  if (s.files) {
    out.push(`  memfd: ${s.files.files} files, ${formatBytes(s.files.bytes)} of file size (holes included) compared byte for byte: ${s.files.verified ? 'verified' : 'FAILED'}`);
  }
  if (s.restore) {
    out.push(`  restored ${s.restore.folios} folios, ${formatBytes(s.restore.bytes)}; orders ${s.restore.ordersMatch ? 'match' : 'DIFFER'}`);
    out.push(`  checksum ${s.restore.checksumActual} (expected ${s.restore.checksumExpected})`);
  }
  out.push(`  free pages after finish (tracker pages counted as free) ${s.freePagesAfterFinish}, cold boot ${s.freePagesColdBoot}${s.freePagesAfterFinish === s.freePagesColdBoot ? ' (nothing leaked)' : ''}`);
  out.push(`  time: ${Object.entries(s.ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(', ')}`);
  for (const e of s.errors) out.push(`  error: ${e}`);
}

function formatScenario(r: ScenarioResult): string {
  const out = [`kho run: ${r.name}: ${r.generations.length} live updates`];
  const count = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;
  for (const g of r.generations) {
    const by = g.restoredByNext;
    out.push(
      `  generation ${g.generation}: ${g.preserved.folios > 0 ? `preserved ${count(g.preserved.folios, 'folio')} (${formatBytes(g.preserved.bytes)}); ` : ''}${count(g.preserved.blocks, 'block')} in the tracker, ${count(g.preserved.trackerPages, 'tracker page')}` +
        (by ? `; next kernel restored ${by.folios} folios: ${by.verified ? 'verified' : 'FAILED'}` : ''),
    );
    const p = g.preserved;
    const made: string[] = [];
    if (p.vmalloc.areas > 0) made.push(`${count(p.vmalloc.areas, 'vmalloc area')} (${formatBytes(p.vmalloc.bytes)})`);
    if (p.reserveMem.regions > 0) {
      const carried = p.reserveMem.carried > 0 ? `, ${p.reserveMem.carried} carried over unchanged` : '';
      made.push(`${count(p.reserveMem.regions, 'reserve_mem region')} (${formatBytes(p.reserveMem.bytes)}${carried})`);
    }
    if (p.kstate.objects > 0) made.push(`${count(p.kstate.objects, 'kstate object')}${p.kstate.bytes > 0 ? ` (${formatBytes(p.kstate.bytes)} of payload)` : ''}`);
    if (p.memfd.files > 0) made.push(`${count(p.memfd.files, 'memfd file')} (${formatBytes(p.memfd.bytes)})`);
    if (p.guests.guests > 0) made.push(`${count(p.guests.guests, 'guest')} (${count(p.guests.folios, 'folio')}, ${formatBytes(p.guests.bytes)})`);
    if (g.luo) made.push(formatLuoMade(g.luo));
    if (made.length === 0) continue;
    out.push(`    workloads: ${made.join(', ')}`);
    const v = g.verifiedByNext;
    if (!v) continue;
    const ok = (b: boolean): string => (b ? 'verified' : 'FAILED');
    const found: string[] = [];
    if (p.vmalloc.areas > 0) found.push(`vmalloc ${v.vmalloc.areas}/${p.vmalloc.areas} ${ok(v.vmalloc.verified)}`);
    if (p.reserveMem.regions > 0) found.push(`reserve_mem ${v.reserveMem.regions}/${p.reserveMem.regions} ${ok(v.reserveMem.verified)}`);
    if (p.kstate.objects > 0) {
      found.push(`kstate ${v.kstate.objects}/${p.kstate.objects} ${ok(v.kstate.verified)} (${v.kstate.fieldsRestored} fields restored, ${v.kstate.fieldsDefaulted} defaulted)`);
    }
    if (p.memfd.files > 0) found.push(`memfd ${v.memfd.files}/${p.memfd.files} ${ok(v.memfd.verified)}`);
    if (p.guests.guests > 0) found.push(`guests ${v.guests.guests}/${p.guests.guests} (${v.guests.folios} folios restored, ${v.guests.stamps} stamps) ${ok(v.guests.verified)}`);
    if (g.luo) found.push(formatLuoVerified(g.luo, g.luoVerifiedByNext));
    out.push(`    next kernel: ${found.join(', ')}`);
  }
  if (r.lastKernel?.previousRelease) out.push(`  last kernel: exec from ${r.lastKernel.previousRelease} (count ${r.lastKernel.kexecCount})`);
  out.push(`  free pages at the end (tracker pages counted as free) ${r.freePagesAtEnd}, cold boot ${r.freePagesColdBoot}`);
  for (const e of r.errors) out.push(`  error: ${e}`);
  out.push(r.ok ? 'RESULT: every generation verified, nothing leaked' : 'RESULT: FAILED');
  return out.join('\n');
}

/** A shell word: quoted when it holds anything but safe characters. */
function shellWord(w: string): string {
  return /^[A-Za-z0-9_./:=,%+-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`;
}

/** The demo's options as a command line that runs it again (sizes as typed: 256M, not 268435456). */
export function describeFlags(f: DemoFlags): string {
  const words = ['--seed', String(f.seed), '--mem', formatSizeExact(f.mem), '--ram', formatSizeExact(f.ram), '--nodes', String(f.nodes)];
  if (f.cmdline) words.push('--cmdline', f.cmdline);
  if (f.tracker && f.tracker !== 'radix') words.push('--tracker', f.tracker);
  return words.map(shellWord).join(' ');
}

function formatDemo(r: DemoReport): string {
  const out: string[] = [];
  const f = r.first;
  out.push(`kho demo: seed ${r.seed}, ${formatBytes(r.mem)} of folios on a ${formatBytes(r.ram)} machine`);
  out.push(`first kernel (generation 1): ${f.folios} folios of random order, ${formatBytes(f.bytesPreserved)}; memfd files: ${formatBytes(f.fileBytes)} written`);
  out.push(`  preserved ${f.blocksPreserved} blocks (the test folios and their list, the memfd files and their table, the root FDT)`);
  out.push(`  tracker: ${f.tracker} (${trackerDescriptor(f.tracker).title}), ${f.trackerPages} pages of metadata (${formatBytes(f.trackerPages * PAGE_SIZE)})`);
  out.push(`  scratch: ${f.scratch.map((a) => `${hex(a.addr)}+${formatBytes(a.size)}`).join(', ')}`);
  out.push(`  time: ${Object.entries(f.ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(', ')}`);
  printSecondHalf(r.second, out);
  out.push(r.ok ? 'RESULT: every preserved byte verified after kexec' : 'RESULT: FAILED');
  return out.join('\n');
}

/** Where a command's output goes (tests capture it), and whether progress may be drawn. */
interface ProgramIo {
  out: (s: string) => void;
  err: (s: string) => void;
  exit: (code: number) => void;
  isTTY?: boolean;
}

/** Writes a report after checking nothing: callers checked `file` before the run (see checkWritable). */
function writeReportFile(file: string, html: string, io: ProgramIo, json: boolean | undefined): void {
  writeFileSync(file, html);
  if (!json) io.out(`report: ${file} (${formatBytes(Buffer.byteLength(html))} written)\n`);
}

/** Builds the `kho` command. `io` receives what would go to stdout and stderr (tests capture it). */
export function buildProgram(io: ProgramIo): Command {
  const program = new Command('kho')
    .description('kho-lab: run, inspect and measure Kexec HandOver live updates on a simulated machine')
    .version(VERSION, '-V, --version')
    // commander's own error lines are replaced by one `kho: <reason>` line (see runCli)
    .configureOutput({ writeOut: io.out, writeErr: io.err, outputError: () => undefined })
    .exitOverride();

  addDemoOptions(
    program
      .command('demo')
      .description('a whole live update in one process: preserve random folios, kexec, restore and verify every byte')
      .addHelpText('after', `\n${EXIT_HELP}`),
  )
    .option('--json', 'print the report as JSON')
    .option('--report <file.html>', 'write the handover explorer: a self-contained page of the memory before and after the kexec, the root FDT and the tracker')
    .option('--vmm', 'the VMM demo instead: a guest\'s memory and device state as memfds, through LUO (/dev/liveupdate)')
    .option('--guest <size>', 'with --vmm: bytes of guest memory, in 2 MiB folios (default 1G)', sizeArg('--guest'))
    .addOption(new Option('--fill <how>', 'with --vmm: seeded bytes in every guest page, or in one page per 2 MiB folio').choices(['full', 'sparse']))
    .action((flags: DemoFlags & VmmFlags & { report?: string; vmm?: boolean }, cmd: Command) => {
      if (flags.report) checkWritable(flags.report, '--report');
      if (flags.vmm) return vmmDemoCommand(flags, cmd, io, `kho demo --vmm ${describeFlags(flags)}`);
      const opts = demoOptions(flags);
      const progress = createProgress(!flags.json && io.isTTY === true, opts.mem);
      let recorder: RunRecorder | undefined;
      let report: DemoReport;
      try {
        report = runDemo(opts, (bus: MachineBus) => {
          followDemo(bus, progress, opts.mem);
          if (flags.report) recorder = new RunRecorder(bus);
        });
      } finally {
        progress.stop();
      }
      io.out(`${flags.json ? JSON.stringify(report, null, 2) : formatDemo(report)}\n`);
      if (recorder && flags.report) writeReportFile(flags.report, renderRunExplorer(demoReportData(recorder, `kho demo ${describeFlags(flags)}`, report)), io, flags.json);
      io.exit(report.ok ? EXIT.OK : EXIT.FAILED);
    });

  addDemoOptions(
    program
      .command('kexec')
      .description("run the demo's first kernel and write the handover image at the jump")
      .addHelpText('after', '\nThe image is an ELF64 core file: one PT_LOAD per run of populated pages and the KHO notes.'),
  )
    .requiredOption('--image <file>', 'where to write the handover image')
    .option('--json', 'print the summary as JSON')
    .option('--vmm', 'the VMM demo\'s first kernel instead (see kho demo --vmm)')
    .option('--guest <size>', 'with --vmm: bytes of guest memory (default 1G)', sizeArg('--guest'))
    .addOption(new Option('--fill <how>', 'with --vmm: seeded bytes in every guest page, or in one page per 2 MiB folio').choices(['full', 'sparse']))
    .action((flags: DemoFlags & VmmFlags & { image: string; vmm?: boolean }, cmd: Command) => {
      if (flags.vmm) return vmmKexecCommand(flags, cmd, io);
      const opts = demoOptions(flags);
      checkWritable(flags.image, '--image');
      const first = runFirstHalf(opts);
      const written = writeHandoverImage(flags.image, first.machine, first.params, {
        cmdline: first.params.cmdline,
        tracker: first.tracker,
        demo: { mem: opts.mem, seed: opts.seed },
        generation: first.generation + 1,
      });
      const { machine: _m, params: _p, ...summary } = first;
      if (flags.json) io.out(`${JSON.stringify({ image: flags.image, imageBytes: written, ...summary }, null, 2)}\n`);
      else {
        io.out(
          `wrote ${flags.image} (${formatBytes(written)} file): generation ${summary.generation} preserved ${summary.folios} folios (${formatBytes(summary.bytesPreserved)}) and memfd files (${formatBytes(summary.fileBytes)} written) as ${summary.blocksPreserved} blocks; it boots generation ${summary.generation + 1}\n`,
        );
      }
      io.exit(EXIT.OK);
    });

  program
    .command('boot')
    .description("boot a new kernel from a handover image and run the demo's restore half")
    .requiredOption('--image <file>', 'handover image written by `kho kexec`')
    .addOption(trackerOption().default(undefined, "the image's"))
    .option('--json', 'print the report as JSON')
    .addHelpText('after', "\nA --tracker other than the image's makes the next kernel refuse the handover (exit 1).")
    .action((flags: { image: string; tracker?: TrackerKind; json?: boolean }) => {
      const loaded = loadHandoverImage(flags.image);
      if (loaded.extras.vmm !== undefined) {
        if (!isVmmImageInfo(loaded.extras.vmm)) throw new KernelError(Errno.EINVAL, `image: its VMM settings are malformed`);
        return vmmBootCommand(loaded, loaded.extras.vmm, flags, io);
      }
      const demo = loaded.extras.demo ?? { mem: DEFAULT_DEMO.mem, seed: DEFAULT_DEMO.seed };
      const written = loaded.extras.tracker ?? 'radix';
      if (!flags.tracker && !isTrackerKind(written)) {
        throw new KernelError(Errno.EINVAL, `image ${flags.image}: tracker '${written}' is not one of ${TRACKER_KINDS.join(', ')} (give --tracker)`);
      }
      const tracker = flags.tracker ?? (written as TrackerKind);
      const opts: DemoOptions = { ...DEFAULT_DEMO, ...demo, cmdline: loaded.extras.cmdline ?? '', tracker };
      const second = runSecondHalf(loaded.machine, loaded.params, opts, loaded.ranges, loaded.extras.generation);
      if (flags.json) io.out(`${JSON.stringify(second, null, 2)}\n`);
      else {
        const out: string[] = [];
        printSecondHalf(second, out);
        out.push(second.ok ? 'RESULT: every preserved byte verified after kexec' : 'RESULT: FAILED');
        io.out(`${out.join('\n')}\n`);
      }
      io.exit(second.ok ? EXIT.OK : EXIT.FAILED);
    });

  program
    .command('run')
    .description('run a scenario (JSON or YAML): a machine, its kernels\' command lines, what each generation preserves, a chain of kexecs')
    .argument('<file>', 'a scenario file, JSON or YAML (see examples/)')
    .option('--json', 'print the result as JSON')
    .option('--report <file.html>', 'write the handover explorer: every kexec of the chain on a timeline, each memory map, FDT and tracker')
    .addHelpText('after', `\nAn invalid scenario is refused naming the path of each bad field and what was expected.\n${EXIT_HELP}`)
    .action((file: string, flags: { json?: boolean; report?: string }) => {
      const scenario = readScenario(file);
      const ram = scenario.machine.ranges ? scenario.machine.ranges.reduce((n, r) => n + r.size, 0) : (scenario.machine.ram ?? DEFAULT_DEMO.ram);
      checkHostHolds(ram, `scenario ${file}: machine.ram`);
      const demand = scenarioDemand(scenario);
      if (demand.bytes > ram) {
        throw new KernelError(
          Errno.ENOMEM,
          `scenario ${file}: generation ${demand.generation} preserves ${formatSizeExact(demand.bytes)}, more than the machine's ${formatSizeExact(ram)} of RAM (wanted less to preserve, or more machine.ram)`,
        );
      }
      scenario.generations.forEach((g, i) => g.cmdline !== undefined && checkCmdline(g.cmdline, `scenario ${file}: generations[${i}].cmdline`));
      checkCmdline(scenario.cmdline, `scenario ${file}: cmdline`);
      if (flags.report) checkWritable(flags.report, '--report');
      const total = scenario.generations.length + 1;
      const progress = createProgress(!flags.json && io.isTTY === true, total);
      let recorder: RunRecorder | undefined;
      let result: ScenarioResult;
      try {
        result = runScenario(scenario, {
          observe: (bus) => {
            followScenario(bus, progress, total);
            if (flags.report) recorder = new RunRecorder(bus);
          },
        });
      } catch (e) {
        throw inFile(`scenario ${file}`, e);
      } finally {
        progress.stop();
      }
      io.out(`${flags.json ? JSON.stringify(result, null, 2) : formatScenario(result)}\n`);
      if (recorder && flags.report) writeReportFile(flags.report, renderRunExplorer(scenarioReportData(recorder, `kho run ${shellWord(file)}`, result)), io, flags.json);
      io.exit(result.ok ? EXIT.OK : EXIT.FAILED);
    });

  program
    .command('bench')
    .description("run every package's benchmarks and print a table (or JSON lines)")
    .option('--only <prefix...>', 'only benchmarks whose names start with one of these (e.g. radix/ physmem/)')
    .option('--quick', 'the short version (smaller sizes, same code paths)')
    .option('--json', 'one JSON object per line: {"bench":"<package>/<name>","value":…,"unit":…}')
    .option('--list', 'list the benchmarks and their targets')
    .option('--runs <n>', 'run each benchmark N times and report the median and the spread (min..max)', intArg('--runs', 1, 100), 1)
    .option('--check', 'exit 1 when a benchmark misses its target (or, with --baseline, regresses)')
    .option('--baseline <file>', 'compare with a saved run (the output of kho bench --json) and flag regressions beyond the spread')
    .addHelpText(
      'after',
      '\nBenchmarks are part of the workspace sources: run it inside a kho-lab checkout. Each benchmark with a target\n' +
        'says pass or MISS (on the median of its runs). The machines are shared and noisy: compare ratios, use --runs.',
    )
    .action((flags: { only?: string[]; quick?: boolean; json?: boolean; list?: boolean; runs: number; check?: boolean; baseline?: string }) => {
      const root = workspaceRoot();
      if (!root) throw new KernelError(Errno.ENOENT, 'kho bench runs inside a kho-lab checkout (no packages/*/bench found)');
      const baseline = flags.baseline ? readBaseline(flags.baseline) : undefined;
      loadBenchFiles(root);
      const only = (flags.only ?? []).flatMap((p) => p.split(',')).filter(Boolean);
      if (flags.list) {
        const names = registeredBenches().filter((b) => only.length === 0 || only.some((p) => b.name.startsWith(p)));
        io.out(names.map((b) => `${b.name}${b.target ? `  (target: ${b.target})` : ''}\n`).join(''));
        io.exit(EXIT.OK);
        return;
      }
      const lines: BenchLine[] = [];
      const progress = createProgress(!flags.json && io.isTTY === true, registeredBenches().length);
      let summary: BenchSummary;
      try {
        summary = runBenches(
          { only, quick: flags.quick === true, runs: flags.runs, baseline },
          (line) => {
            lines.push(line);
            if (flags.json) io.out(`${JSON.stringify(line)}\n`);
          },
          (name, i) => progress.update(i, name),
        );
      } finally {
        progress.stop();
      }
      if (!flags.json) io.out(`${formatBenchTable(lines)}\n`);
      if (summary.failed > 0) io.err(`kho: ${summary.failed} benchmark(s) failed\n`);
      if (summary.missed.length > 0) io.err(`kho: ${summary.missed.length} missed a target: ${summary.missed.join(', ')}\n`);
      if (summary.regressions.length > 0) io.err(`kho: ${summary.regressions.length} regressed against ${flags.baseline}: ${summary.regressions.join(', ')}\n`);
      const missed = flags.check === true && summary.missed.length + summary.regressions.length > 0;
      io.exit(summary.failed > 0 || missed ? EXIT.FAILED : EXIT.OK);
    });

  program
    .command('fuzz')
    .description('mutate valid handovers and boot each: never a crash, a hang, or a block restored that was not preserved')
    .option('--cases <n>', 'how many mutated handovers to boot', intArg('--cases', 1, 10_000_000), 1000)
    .option('--seed <n>', 'seed of the mutations', intArg('--seed', 0, 2 ** 32 - 1), 1)
    .option('--jobs <n>', 'worker threads (default: every core); the cases and the report do not depend on it', intArg('--jobs', 1, 256))
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nTargets: the root FDT, the tracker, the scratch array, the kstate stream, vmalloc chunks, the memfd table, the memblock FDT,\n' +
        'kexec-metadata, the LUO and kho-slab blobs and the pages they link (sessions, file and memfd-v2 records, kho_block chains),\n' +
        "and the image file's ELF headers and notes.\n" +
        'Mutations: bit flips, random words, pointers redirected (outside RAM, into scratch, to themselves, to another structure),\n' +
        'counts and lengths past their container, huge sizes, cycles, shared nodes, repeated and overlapping records; half of the\n' +
        'tracker, root FDT and kstate cases recompute their checksums, so the content checks are what is tested.\n' +
        'Exit status: 0 when every case was refused or accepted cleanly, 1 on any crash, hang, false restore or lost byte.',
    )
    .action(async (flags: { cases: number; seed: number; jobs?: number; json?: boolean }) => {
      const jobs = Math.min(flags.jobs ?? defaultJobs(), Math.ceil(flags.cases / 20));
      const progress = createProgress(!flags.json && io.isTTY === true, flags.cases);
      const onCase = (c: { index: number; target: string; mutation: string }): void => progress.update(c.index + 1, `${c.target}: ${c.mutation}`);
      const report = (result: FuzzResult): void => {
        const bad = [...result.crashes, ...result.hangs, ...result.falseRestores, ...result.lost];
        if (flags.json) io.out(`${JSON.stringify(result, null, 2)}\n`);
        else {
          const out = [
            `kho fuzz: ${result.cases} cases (seed ${flags.seed}): ${result.refused} refused, ${result.accepted} accepted, ${result.crashes.length} crashes, ${result.hangs.length} hangs, ${result.falseRestores.length} false restores, ${result.lost.length} lost bytes`,
          ];
          for (const [t, n] of Object.entries(result.byTarget)) out.push(`  ${t.padEnd(28)} tried ${n.tried}, refused ${n.refused}, accepted ${n.accepted}`);
          out.push(`  mutations: ${Object.entries(result.byMutation).sort().map(([m, n]) => `${m} ${n}`).join(', ')}`);
          out.push('  most frequent refusals:');
          for (const [reason, n] of Object.entries(result.reasons).sort((a, b) => b[1] - a[1]).slice(0, 8)) out.push(`    ${String(n).padStart(5)}  ${reason}`);
          for (const c of bad) out.push(`  ${c.outcome.toUpperCase()} case ${c.index} (${c.target}, ${c.mutation}${c.crc ? '+crc' : ''} at ${c.at}): ${c.detail}`);
          io.out(`${out.join('\n')}\n`);
        }
        io.exit(bad.length === 0 ? EXIT.OK : EXIT.FAILED);
      };
      if (jobs <= 1) {
        try {
          report(fuzzHandovers({ cases: flags.cases, seed: flags.seed, onCase }));
        } finally {
          progress.stop();
        }
        return;
      }
      try {
        report(await fuzzHandoversParallel({ cases: flags.cases, seed: flags.seed, jobs, onCase }));
      } finally {
        progress.stop();
      }
    });

  program
    .command('sweep')
    .description('kexec at every moment of every multi-step operation (anytime), or fail every allocation of every new path once (faults)')
    .addArgument(new Argument('<sweep>', 'which sweep').choices(['anytime', 'faults']))
    .option('--paths <names>', 'only these paths, comma-separated (see --list)')
    .option('--limit <n>', 'at most N moments (anytime) or failure points (faults) per path, spread evenly, first and last included', intArg('--limit', 1, 1_000_000))
    .option('--jobs <n>', 'worker threads (default: every core)', intArg('--jobs', 1, 256))
    .option('--list', 'list the paths of the sweep and exit')
    .option('--json', 'print the whole report (every case) as JSON')
    .addHelpText(
      'after',
      '\nThe sweeps are deterministic: the same options give the same report whatever --jobs is (cases run on worker\n' +
        'threads, results are kept in case order). Exit status: 0 when every case passed, 1 when one failed, 2 on bad input.',
    )
    .action(async (which: 'anytime' | 'faults', flags: { paths?: string; limit?: number; jobs?: number; list?: boolean; json?: boolean }) => {
      const all = which === 'anytime' ? ANYTIME_PATHS : FAULT_PATHS;
      if (flags.list) {
        io.out(all.map((p) => `${p.name}: ${p.title}\n`).join(''));
        io.exit(EXIT.OK);
        return;
      }
      const paths = flags.paths === undefined ? undefined : flags.paths.split(',').map((x) => x.trim());
      if (paths?.some((x) => x === '')) bad(`--paths '${flags.paths}' has an empty name (wanted names separated by commas; see kho sweep ${which} --list)`);
      const jobs = flags.jobs ?? defaultJobs();
      let progress: ReturnType<typeof createProgress> | undefined;
      const onCase = (done: number, total: number, r: { path: string }): void => {
        progress ??= createProgress(!flags.json && io.isTTY === true, total);
        progress.update(done, r.path);
      };
      const opts = { paths, limit: flags.limit, jobs, onCase };
      try {
        const report = which === 'anytime' ? await sweepAnytime(opts) : await sweepFaults(opts);
        progress?.stop();
        if (flags.json) io.out(`${JSON.stringify({ sweep: which, ...report }, null, 2)}\n`);
        else io.out(`${which === 'anytime' ? formatAnytimeSweep(report as Awaited<ReturnType<typeof sweepAnytime>>, jobs) : formatFaultSweep(report as Awaited<ReturnType<typeof sweepFaults>>, jobs)}\n`);
        io.exit(report.failed === 0 ? EXIT.OK : EXIT.FAILED);
      } finally {
        progress?.stop();
      }
    });

  program
    .command('soak')
    .description('a long chain of live updates, each generation preserving a seeded random mix of subsystems; every byte verified, free pages checked, host memory measured')
    .option('--generations <n>', 'live updates in the chain', intArg('--generations', 1, 1000), 1000)
    .option('--seed <n>', 'seed of the mix', intArg('--seed', 0, 2 ** 32 - 1), 1)
    .option('--ram <size>', 'RAM of the machine', sizeArg('--ram'), 512 * 2 ** 20)
    .option('--json', 'JSON lines: one {"soak":"sample",…} per sampled generation, then {"soak":"result",…}')
    .addHelpText(
      'after',
      '\nSubsystems: folios, vmalloc, kstate, reserve_mem, memfd, kmalloc objects (kho-slab), LUO sessions. The host is sampled\n' +
        'at generations 1, 100, every 100th and the last (RSS, heap after a full collection). Exit status: 0 when every\n' +
        'generation verified and no dead kernel stayed reachable, 1 otherwise, 2 on bad input.',
    )
    .action(async (flags: { generations: number; seed: number; ram: number; json?: boolean }) => {
      checkMachineSize(flags.ram, 1);
      const result = await runSoak({
        generations: flags.generations,
        seed: flags.seed,
        ram: flags.ram,
        onSample: (s) => io.out(flags.json ? `${JSON.stringify({ soak: 'sample', ...s })}\n` : `${formatSoakSample(s)}\n`),
      });
      io.out(flags.json ? `${JSON.stringify({ soak: 'result', ...result })}\n` : `${formatSoakResult(result)}\n`);
      if (result.kernels.reachableAfter > 0) io.err(`kho: ${result.kernels.reachableAfter} of ${result.kernels.booted} dead kernels were still reachable after the soak\n`);
      io.exit(result.ok && result.kernels.reachableAfter === 0 ? EXIT.OK : EXIT.FAILED);
    });

  program
    .command('inspect')
    .description('decode a handover image: root FDT, scratch areas, preserved blocks, subtrees, tracker figures; list every problem')
    .argument('<file>', 'a handover image written by kho kexec')
    .option('--json', 'print everything as JSON (blocks as {"phys":"0x…","order":n}, problems as {"where","what","wanted"})')
    .option('--dtb-out <file>', 'also write the root FDT as a .dtb file (for dtc -I dtb -O dts)')
    .option('--strict', 'refuse at the first problem, as the next kernel does (one line, exit 2)')
    .addHelpText('after', '\nA damaged image is decoded as far as it goes and each problem is listed (where, what, what was wanted); the exit status is then 2.')
    .action((file: string, flags: { json?: boolean; dtbOut?: string; strict?: boolean }) => {
      if (flags.dtbOut) checkWritable(flags.dtbOut, '--dtb-out');
      const r = inspectImage(file, { strict: flags.strict });
      if (flags.dtbOut && r.rootDtb) writeFileSync(flags.dtbOut, r.rootDtb);
      // streamed: a map of millions of blocks never becomes one string
      if (flags.json) writeInspectionJson(r, io.out);
      else writeInspection(r, io.out);
      if (r.problems.length > 0) {
        const first = r.problems[0];
        const more = r.problems.length > 1 ? ` (and ${r.problems.length - 1} more, listed ${flags.json ? 'in "problems"' : 'above'})` : '';
        io.err(`kho: image ${file}: ${first.where}: ${first.what} (wanted ${first.wanted})${more}\n`);
        io.exit(EXIT.BAD_INPUT);
        return;
      }
      io.exit(EXIT.OK);
    });

  program
    .command('explore')
    .description('write the handover explorer for an image: a self-contained page of its memory map, root FDT, subtrees and radix tree')
    .argument('<image>', 'a handover image written by kho kexec')
    .option('--out <file.html>', 'where to write the page (default: the image name with .html)')
    .addHelpText('after', '\nThe page needs no network and no server: open it in any browser. A damaged image is drawn as far as it decodes, with its problems listed.')
    .action((file: string, flags: { out?: string }) => {
      const out = flags.out ?? `${file.replace(/\.[^./]*$/, '')}.html`;
      checkWritable(out, flags.out ? '--out' : 'the page');
      const r = inspectImage(file);
      writeFileSync(out, renderImageExplorer(r));
      io.out(`explorer: ${out}${r.problems.length ? ` (${r.problems.length} problem${r.problems.length === 1 ? '' : 's'} listed on the page)` : ''}\n`);
      io.exit(EXIT.OK);
    });

  program
    .command('compat')
    .description("can kernel B take kernel A's handover? A and B are handover images or configurations such as 'kho_abi=v2 reserve_mem_handover=kstate'")
    .argument('[from]', 'the kernel that hands over: an image file or a configuration')
    .argument('[to]', 'the kernel that boots from it: an image file (its writer) or a configuration')
    .option('--matrix', 'every generation against every other, for the lab and for Linux')
    .option('--json', 'print the result as JSON')
    .action((from: string | undefined, to: string | undefined, flags: { matrix?: boolean; json?: boolean }) => {
      if (flags.matrix) {
        const m = compatMatrix();
        io.out(`${flags.json ? JSON.stringify(m, null, 2) : formatMatrix(m)}\n`);
        io.exit(EXIT.OK);
        return;
      }
      if (from === undefined || to === undefined) throw new KernelError(Errno.EINVAL, 'compat: give two kernels (FROM TO: images or configurations), or --matrix');
      const r = compareKernels(kernelFromArg(from), kernelFromArg(to));
      io.out(`${flags.json ? JSON.stringify(r, null, 2) : formatCompat(r)}\n`);
      io.exit(r.lab ? EXIT.OK : EXIT.FAILED);
    });

  program.addOption(new Option('--no-color', 'plain output').hideHelp());
  return program;
}

const EXIT_HELP = 'Exit status: 0 when everything verified, 1 when verification failed, 2 on bad input (one line `kho: <reason>` on stderr).';

/** Names the file an error came from, keeping its errno (a KernelError stays bad input). */
function inFile(where: string, e: unknown): unknown {
  if (e instanceof KernelError) return new KernelError(e.errno, `${where}: ${e.reason}`, { cause: e });
  return e;
}

/** Where a command's output goes; tests capture it. */
export interface CliIo {
  out(s: string): void;
  err(s: string): void;
  /** True when progress may be drawn (stderr is a terminal). */
  isTTY?: boolean;
}

/**
 * Commander's error, as the one line `kho: <reason>` says it: what was given, and what was wanted. `argv` names
 * the command the error is about.
 */
export function commanderReason(e: CommanderError, program: Command, argv: readonly string[] = []): string {
  const msg = e.message.replace(/^error: /, '').split('\n')[0];
  const commands = program.commands.map((c) => c.name()).join(', ');
  const cmd = program.commands.find((c) => argv.includes(c.name()));
  const name = cmd ? `kho ${cmd.name()}` : 'kho';
  const describe = (flag: string): string => cmd?.options.find((o) => o.long === flag)?.description ?? '';
  let m: RegExpExecArray | null;
  if (e.code === 'commander.unknownCommand' && (m = /unknown command '([^']*)'/.exec(msg))) {
    return `unknown command '${m[1]}' (wanted one of ${commands}; see kho --help)`;
  }
  if (e.code === 'commander.unknownOption' && (m = /unknown option '([^']*)'/.exec(msg))) {
    const hint = /\(Did you mean ([^?]*)\?\)/.exec(e.message);
    return `unknown option '${m[1]}' for ${name} (wanted ${hint ? hint[1] : `one listed by ${name} --help`})`;
  }
  if (e.code === 'commander.invalidArgument' && (m = /option '([^' ]*)[^']*' argument '([^']*)' is invalid\. (.*)$/.exec(msg))) {
    const choices = /Allowed choices are (.*)\.$/.exec(m[3]);
    if (choices) return `${m[1]} '${m[2]}' is not allowed (wanted one of ${choices[1]})`;
    return m[3].startsWith(m[1]) ? m[3] : `${m[1]} ${m[3]}`;
  }
  if (e.code === 'commander.invalidArgument' && (m = /command-argument value '([^']*)' is invalid for argument '([^']*)'\. Allowed choices are (.*)\.$/.exec(msg))) {
    return `${name} <${m[2]}> '${m[1]}' is not allowed (wanted one of ${m[3]})`;
  }
  if (e.code === 'commander.missingMandatoryOptionValue' && (m = /required option '([^' ]*)( [^']*)?' not specified/.exec(msg))) {
    return `${name} needs ${m[1]}${m[2] ?? ''} (wanted ${describe(m[1]) || 'it'}; see ${name} --help)`;
  }
  if (e.code === 'commander.optionMissingArgument' && (m = /option '([^' ]*)( [^']*)?' argument missing/.exec(msg))) {
    return `${m[1]} needs a value (wanted ${m[1]}${m[2] ?? ''}: ${describe(m[1]) || 'see --help'})`;
  }
  if (e.code === 'commander.missingArgument' && (m = /missing required argument '([^']*)'/.exec(msg))) {
    const arg = cmd?.registeredArguments.find((a) => a.name() === m![1]);
    return `${name} needs its <${m[1]}> argument (wanted ${arg?.description || 'it'}; see ${name} --help)`;
  }
  if (e.code === 'commander.excessArguments' && (m = /Expected (\d+) arguments? but got (\d+)/.exec(msg))) {
    const n = Number(m[1]);
    return `${name} takes ${n === 0 ? 'no arguments' : `${n} argument${n > 1 ? 's' : ''}`} (got ${m[2]}; see ${name} --help)`;
  }
  return msg;
}

/** The exit status of a command that threw, after its one line `kho: <reason>` on stderr. */
function failureCode(e: unknown, program: Command, argv: readonly string[], io: CliIo): number {
  if (e instanceof CommanderError) {
    if (e.exitCode === 0) return EXIT.OK; // --help, --version
    io.err(`kho: ${commanderReason(e, program, argv)}\n`);
    return EXIT.BAD_INPUT;
  }
  const message = describeError(e).split('\n')[0];
  if (e instanceof KernelError) {
    io.err(`kho: ${message}\n`);
    return EXIT.BAD_INPUT;
  }
  io.err(`kho: internal error: ${message}\n`);
  return EXIT.FAILED;
}

/**
 * Runs the command line with `io` and returns the exit status: 0 success, 1 a failed verification or an
 * unexpected error, 2 bad input (usage, sizes, unreadable or malformed files). Every failure prints exactly one
 * line `kho: <reason>` on stderr, never a stack trace. Synchronous: for every command but `sweep`, `soak` and
 * `fuzz --jobs N`, which run on worker threads or wait for the collector (use runCliAsync).
 */
export function runCli(argv: readonly string[], io: CliIo): number {
  let code: number = EXIT.OK;
  const program = buildProgram({ out: io.out, err: io.err, exit: (c) => (code = c), isTTY: io.isTTY });
  try {
    program.parse([...argv], { from: 'user' });
  } catch (e) {
    return failureCode(e, program, argv, io);
  }
  return code;
}

/** runCli for every command, the asynchronous ones (`sweep`, `soak`) included. */
export async function runCliAsync(argv: readonly string[], io: CliIo): Promise<number> {
  let code: number = EXIT.OK;
  const program = buildProgram({ out: io.out, err: io.err, exit: (c) => (code = c), isTTY: io.isTTY });
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (e) {
    return failureCode(e, program, argv, io);
  }
  return code;
}

/** The process entry point (bin/kho.js). */
export function main(argv: string[]): void {
  // `kho inspect FILE | head`: a reader that goes away is not an error of ours; stop quietly.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EPIPE') throw e;
      process.exit(process.exitCode ?? 0);
    });
  }
  void runCliAsync(argv, { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s), isTTY: process.stderr.isTTY }).then((code) => {
    process.exitCode = code;
  });
}
