import 'reflect-metadata';
import { writeFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { Errno, KernelError, formatBytes, hex, parseSize } from '@kho/kernel';
import { registeredBenches } from '@kho/kernel/bench';
import { formatBenchTable, loadBenchFiles, readBaseline, runBenches, workspaceRoot, type BenchLine, type BenchSummary } from './bench';
import { PAGE_SIZE } from '@kho/physmem';
import { DEFAULT_DEMO, runDemo, runFirstHalf, runSecondHalf, type DemoOptions, type DemoReport, type SecondHalf } from './demo/run';
import { loadHandoverImage, writeHandoverImage } from './handover';
import { formatInspection, inspectImage } from './inspect';
import { DemoReportCollector } from './report/demo-report';
import { ScenarioReportCollector } from './report/scenario-report';
import { createProgress } from './progress';
import { readScenario } from './scenario/schema';
import { fuzzHandovers, type FuzzResult } from './reliability/fuzz';
import { runScenario, type ScenarioResult } from './scenario/run';
import { writeReport } from './report/html';
import { TRACKER_KINDS, isTrackerKind, type TrackerKind } from './system';

/** What each tracker writes for the next kernel. */
const TRACKER_FORMATS: Record<TrackerKind, string> = {
  radix: 'kho-v2 radix tree',
  'bitmap-chunks': 'kho-v1 bitmaps, chunk list',
  'bitmap-array': 'kho-v1-karr bitmaps, KHO array',
};

/** Exit codes of every command. */
export const EXIT = { OK: 0, FAILED: 1, BAD_INPUT: 2 } as const;

const VERSION = '0.1.0';

function sizeArg(what: string) {
  return (text: string): number => {
    try {
      return parseSize(text, what);
    } catch (e) {
      throw new InvalidArgumentError(e instanceof Error ? e.message.replace(/^E[A-Z0-9]+: /, '') : String(e));
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

function demoOptions(f: DemoFlags): DemoOptions {
  if (f.mem % PAGE_SIZE !== 0) throw new KernelError(22, `--mem ${f.mem} is not a multiple of the page size (${PAGE_SIZE})`);
  if (f.mem > f.ram / 2) throw new KernelError(22, `--mem ${formatBytes(f.mem)} is more than half of --ram ${formatBytes(f.ram)} (scratch and the kernel need the rest)`);
  return { seed: f.seed, mem: f.mem, ram: f.ram, nodes: f.nodes, cmdline: f.cmdline, tracker: f.tracker };
}

function addDemoOptions(cmd: Command): Command {
  return cmd
    .option('--seed <n>', 'seed of the random folio orders and contents', intArg('--seed', 0, 2 ** 32 - 1), DEFAULT_DEMO.seed)
    .option('--mem <size>', 'bytes of folios to preserve (K, M, G suffixes)', sizeArg('--mem'), DEFAULT_DEMO.mem)
    .option('--ram <size>', 'RAM of the simulated machine', sizeArg('--ram'), DEFAULT_DEMO.ram)
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
  out.push(`next kernel: ${s.khoBoot ? 'KHO boot' : `cold boot${s.revivalError ? ` (revival refused: ${s.revivalError})` : ''}`}`);
  if (s.files) out.push(`  memfd: ${s.files.files} files, ${formatBytes(s.files.bytes)}: ${s.files.verified ? 'verified' : 'FAILED'}`);
  if (s.restore) {
    out.push(`  restored ${s.restore.folios} folios, ${formatBytes(s.restore.bytes)}; orders ${s.restore.ordersMatch ? 'match' : 'DIFFER'}`);
    out.push(`  checksum ${s.restore.checksumActual} (expected ${s.restore.checksumExpected})`);
  }
  out.push(`  free pages after finish ${s.freePagesAfterFinish}, cold boot ${s.freePagesColdBoot}${s.freePagesAfterFinish === s.freePagesColdBoot ? ' (nothing leaked)' : ''}`);
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
    out.push(`    next kernel: ${found.join(', ')}`);
  }
  out.push(`  free pages at the end ${r.freePagesAtEnd}, cold boot ${r.freePagesColdBoot}`);
  for (const e of r.errors) out.push(`  error: ${e}`);
  out.push(r.ok ? 'RESULT: every generation verified, nothing leaked' : 'RESULT: FAILED');
  return out.join('\n');
}

function describeFlags(f: DemoFlags): string {
  return `--seed ${f.seed} --mem ${formatBytes(f.mem)} --ram ${formatBytes(f.ram)} --nodes ${f.nodes}${f.cmdline ? ` --cmdline "${f.cmdline}"` : ''}`;
}

function formatDemo(r: DemoReport): string {
  const out: string[] = [];
  const f = r.first;
  out.push(`kho demo: seed ${r.seed}, ${formatBytes(r.mem)} of folios on a ${formatBytes(r.ram)} machine`);
  out.push(`first kernel: ${f.folios} folios of random order, ${formatBytes(f.bytesPreserved)}; memfd files ${formatBytes(f.fileBytes)}`);
  out.push(`  preserved ${f.blocksPreserved} blocks (the test folios and their list, the memfd files and their table, the root FDT)`);
  out.push(`  tracker: ${f.tracker} (${TRACKER_FORMATS[f.tracker]}), ${f.trackerPages} pages of metadata (${formatBytes(f.trackerPages * PAGE_SIZE)})`);
  out.push(`  scratch: ${f.scratch.map((a) => `${hex(a.addr)}+${formatBytes(a.size)}`).join(', ')}`);
  out.push(`  time: ${Object.entries(f.ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(', ')}`);
  printSecondHalf(r.second, out);
  out.push(r.ok ? 'RESULT: every preserved byte verified after kexec' : 'RESULT: FAILED');
  return out.join('\n');
}

/** Builds the `kho` command. `io` receives what would go to stdout and stderr (tests capture it). */
export function buildProgram(io: { out: (s: string) => void; err: (s: string) => void; exit: (code: number) => void; isTTY?: boolean }): Command {
  const program = new Command('kho')
    .description('kho-lab: run, inspect and measure Kexec HandOver live updates on a simulated machine')
    .version(VERSION, '-V, --version')
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)');

  addDemoOptions(
    program
      .command('demo')
      .description('a whole live update in one process: preserve random folios, kexec, restore and verify every byte')
      .addHelpText('after', '\nExit status: 0 when everything verified, 1 when verification failed, 2 on bad input.'),
  )
    .option('--json', 'print the report as JSON')
    .option('--report <file.html>', 'write a self-contained HTML report with the memory map before and after the kexec')
    .action((flags: DemoFlags & { report?: string }) => {
      const collector = flags.report ? new DemoReportCollector() : undefined;
      const opts = demoOptions(flags);
      const progress = createProgress(!flags.json && io.isTTY === true, opts.mem);
      let report: DemoReport;
      try {
        report = runDemo(opts, {
          atJump: (k) => collector?.atJump(k),
          afterBoot: (k) => {
            collector?.afterBoot(k);
            progress.update(opts.mem, 'restore and verify');
          },
          progress: (step, done) => progress.update(done, step),
        });
      } finally {
        progress.stop();
      }
      if (collector && flags.report) writeReport(flags.report, collector.build(`kho demo ${describeFlags(flags)}`, report));
      io.out(`${flags.json ? JSON.stringify(report, null, 2) : formatDemo(report)}\n`);
      if (flags.report && !flags.json) io.out(`report: ${flags.report}\n`);
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
    .action((flags: DemoFlags & { image: string }) => {
      const opts = demoOptions(flags);
      const first = runFirstHalf(opts);
      writeHandoverImage(flags.image, first.machine, first.params, { cmdline: first.params.cmdline, tracker: first.tracker, demo: { mem: opts.mem, seed: opts.seed } });
      const { machine: _m, params: _p, ...summary } = first;
      if (flags.json) io.out(`${JSON.stringify({ image: flags.image, ...summary }, null, 2)}\n`);
      else io.out(`wrote ${flags.image}: ${summary.folios} folios, ${summary.blocksPreserved} preserved blocks, ${formatBytes(summary.bytesPreserved)}\n`);
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
      const demo = loaded.extras.demo ?? { mem: DEFAULT_DEMO.mem, seed: DEFAULT_DEMO.seed };
      const written = loaded.extras.tracker ?? 'radix';
      if (!flags.tracker && !isTrackerKind(written)) {
        throw new KernelError(Errno.EINVAL, `image: tracker '${written}' is not one of ${TRACKER_KINDS.join(', ')} (give --tracker)`);
      }
      const tracker = flags.tracker ?? (written as TrackerKind);
      const opts: DemoOptions = { ...DEFAULT_DEMO, ...demo, cmdline: loaded.extras.cmdline ?? '', tracker };
      const second = runSecondHalf(loaded.machine, loaded.params, opts, loaded.ranges);
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
    .argument('<file>', 'scenario file (see examples/)')
    .option('--json', 'print the result as JSON')
    .option('--report <file.html>', 'write a self-contained HTML report with the memory maps of every kexec')
    .addHelpText('after', '\nAn invalid scenario is refused (exit 2) naming the path of each bad field and what was expected.')
    .action((file: string, flags: { json?: boolean; report?: string }) => {
      const scenario = readScenario(file);
      const collector = flags.report ? new ScenarioReportCollector() : undefined;
      const total = scenario.generations.length + 1;
      const progress = createProgress(!flags.json && io.isTTY === true, total);
      let result: ScenarioResult;
      try {
        result = runScenario(scenario, {
          progress: (gen, step) => progress.update(gen - 1, `generation ${gen}/${total}: ${step}`),
          atJump: (k, gen) => collector?.atJump(k, gen),
          afterBoot: (k, gen) => collector?.afterBoot(k, gen),
        });
      } finally {
        progress.stop();
      }
      if (collector && flags.report) writeReport(flags.report, collector.build(`kho run ${file}`, result));
      io.out(`${flags.json ? JSON.stringify(result, null, 2) : formatScenario(result)}\n`);
      if (flags.report && !flags.json) io.out(`report: ${flags.report}\n`);
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
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nTargets: the root FDT, the tracker, the scratch array, the kstate stream, vmalloc chunks, the memfd table.\n' +
        'Mutations: bit flips, random words, pointers redirected outside RAM, into scratch, into their own page, into another structure.\n' +
        'Exit status: 0 when every case was refused or accepted cleanly, 1 on any crash, hang or false restore.',
    )
    .action((flags: { cases: number; seed: number; json?: boolean }) => {
      const progress = createProgress(!flags.json && io.isTTY === true, flags.cases);
      let result: FuzzResult;
      try {
        result = fuzzHandovers({ cases: flags.cases, seed: flags.seed, onCase: (c) => progress.update(c.index + 1, `${c.target}: ${c.mutation}`) });
      } finally {
        progress.stop();
      }
      const bad = [...result.crashes, ...result.hangs, ...result.falseRestores];
      if (flags.json) io.out(`${JSON.stringify(result, null, 2)}\n`);
      else {
        const out = [`kho fuzz: ${result.cases} cases (seed ${flags.seed}): ${result.refused} refused, ${result.accepted} accepted, ${result.crashes.length} crashes, ${result.hangs.length} hangs, ${result.falseRestores.length} false restores`];
        for (const [t, n] of Object.entries(result.byTarget)) out.push(`  ${t.padEnd(16)} tried ${n.tried}, refused ${n.refused}, accepted ${n.accepted}`);
        out.push('  most frequent refusals:');
        for (const [reason, n] of Object.entries(result.reasons).sort((a, b) => b[1] - a[1]).slice(0, 8)) out.push(`    ${String(n).padStart(5)}  ${reason}`);
        for (const c of bad) out.push(`  ${c.outcome.toUpperCase()} case ${c.index} (${c.target}, ${c.mutation} at ${c.at}): ${c.detail}`);
        io.out(`${out.join('\n')}\n`);
      }
      io.exit(bad.length === 0 ? EXIT.OK : EXIT.FAILED);
    });

  program
    .command('inspect')
    .description('decode a handover image: root FDT, scratch areas, preserved blocks, subtrees, tracker figures')
    .argument('<file>', 'handover image')
    .option('--json', 'print everything as JSON (blocks as {"phys":"0x…","order":n})')
    .option('--dtb-out <file>', 'also write the root FDT as a .dtb file (for dtc -I dtb -O dts)')
    .action((file: string, flags: { json?: boolean; dtbOut?: string }) => {
      const r = inspectImage(file);
      if (flags.dtbOut) writeFileSync(flags.dtbOut, r.rootDtb);
      const { rootDtb: _d, ...data } = r;
      io.out(`${flags.json ? JSON.stringify(data, null, 2) : formatInspection(r)}\n`);
      io.exit(EXIT.OK);
    });

  program.addOption(new Option('--no-color', 'plain output').hideHelp());
  return program;
}

/** Where a command's output goes; tests capture it. */
export interface CliIo {
  out(s: string): void;
  err(s: string): void;
  /** True when progress may be drawn (stderr is a terminal). */
  isTTY?: boolean;
}

/**
 * Runs the command line with `io` and returns the exit status: 0 success, 1 a failed verification or an
 * unexpected error, 2 bad input (usage, sizes, unreadable or malformed files). Expected failures print one line
 * (`kho: …`), never a stack trace.
 */
export function runCli(argv: readonly string[], io: CliIo): number {
  let code: number = EXIT.OK;
  const program = buildProgram({ out: io.out, err: io.err, exit: (c) => (code = c), isTTY: io.isTTY });
  try {
    program.parse([...argv], { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT.OK : EXIT.BAD_INPUT;
    const message = e instanceof KernelError ? e.message.replace(/^E[A-Z0-9]+: /, '') : e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    io.err(`kho: ${message}\n`);
    return e instanceof KernelError ? EXIT.BAD_INPUT : EXIT.FAILED;
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
  process.exitCode = runCli(argv, { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s), isTTY: process.stderr.isTTY });
}
