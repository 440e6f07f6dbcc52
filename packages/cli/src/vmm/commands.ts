import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { Errno, KernelError, formatBytes } from '@kho/kernel';
import { PhysicalMemory } from '@kho/physmem';
import { writeHandoverImage, type LoadedImage } from '../handover';
import { RunRecorder } from '../report/recorder';
import { renderRunExplorer } from '../explore/page';
import type { RunPage } from '../explore/model';
import { createProgress } from '../progress';
import { isTrackerKind, type TrackerKind } from '../system';
import {
  DEFAULT_VMM,
  blackoutOf,
  checkVmmOptions,
  defaultVmmRam,
  runVmm,
  runVmmFirst,
  runVmmSecond,
  type Blackout,
  type VmmFirstHalf,
  type VmmOptions,
  type VmmReport,
  type VmmSecondHalf,
  type VmmSessionReport,
} from './run';

/** What a VMM image stores in its machine note, for `kho boot` and `kho inspect`. */
export interface VmmImageInfo {
  readonly guest: number;
  readonly seed: number;
  readonly fill: 'full' | 'sparse';
  readonly cmdline: string;
  /** The first kernel's phase times (freeze, serialize, kexec...), so the boot half reports the whole blackout. */
  readonly ms: Record<string, number>;
}

/** True when `v` is what {@link VmmImageInfo} says (the note is read from a file: hostile). */
export function isVmmImageInfo(v: unknown): v is VmmImageInfo {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    Number.isSafeInteger(o.guest) &&
    Number.isSafeInteger(o.seed) &&
    (o.fill === 'full' || o.fill === 'sparse') &&
    typeof o.cmdline === 'string' &&
    typeof o.ms === 'object' &&
    o.ms !== null &&
    Object.values(o.ms as object).every((x) => typeof x === 'number')
  );
}

/** The flags of `demo --vmm` and `kexec --vmm`. */
export interface VmmFlags {
  guest?: number;
  seed: number;
  ram: number;
  nodes: number;
  cmdline: string;
  tracker: TrackerKind;
  fill?: 'full' | 'sparse';
  json?: boolean;
  report?: string;
}

/** The options from the flags: --ram, when not given, fits the guest (at least 4 GiB). */
export function vmmOptions(f: VmmFlags, cmd: Command): VmmOptions {
  const guest = f.guest ?? DEFAULT_VMM.guest;
  const ram = cmd.getOptionValueSource('ram') === 'cli' ? f.ram : defaultVmmRam(guest);
  const o: VmmOptions = { guest, seed: f.seed, ram, nodes: f.nodes, cmdline: f.cmdline, tracker: f.tracker, fill: f.fill ?? 'full' };
  checkVmmOptions(o);
  return o;
}

function ms(v: number): string {
  return `${v.toFixed(v < 10 ? 2 : 1)} ms`;
}

function sessionLines(sessions: readonly VmmSessionReport[], how: string): string[] {
  const out: string[] = [];
  for (const s of sessions) {
    out.push(`  session ${s.name} (${how}): ${s.files.length} files`);
    for (const f of s.files) out.push(`    token ${f.token} ${f.handler}: ${f.what}, ${formatBytes(f.bytes)} in ${f.folios} folios, record ${f.record}`);
  }
  return out;
}

export function formatBlackout(b: Blackout): string[] {
  return [
    `blackout (freeze → retrieve complete): ${ms(b.totalMs)}`,
    `  ${Object.entries(b.phases)
      .map(([k, v]) => `${k} ${ms(v)}`)
      .join(', ')}`,
  ];
}

export function formatFirst(f: VmmFirstHalf): string[] {
  return [
    `first kernel: guest memory ${formatBytes(f.guestBytes)} in ${f.guestFolios} folios (orders ${Object.entries(f.folioOrders)
      .map(([o, n]) => `${o}:${n}`)
      .join(' ')}), device state ${formatBytes(f.deviceStateBytes)}; ${f.pattern}`,
    ...sessionLines(f.sessions, 'preserved'),
    `  time: ${Object.entries(f.ms)
      .map(([k, v]) => `${k} ${ms(v)}`)
      .join(', ')}`,
  ];
}

export function formatSecond(s: VmmSecondHalf): string[] {
  const out = [`next kernel: ${s.khoBoot ? 'KHO boot' : `cold boot${s.revivalError ? ` (revival refused: ${s.revivalError})` : ''}`}${s.luoPanic ? `; LUO PANIC: ${s.luoPanic}` : `, live update number ${s.liveupdateNum}`}`];
  out.push(...sessionLines(s.sessions, 'retrieved'));
  out.push(`  guest memory ${formatBytes(s.guest.bytes)} in ${s.guest.folios} folios: ${s.guest.verified ? 'every byte verified' : 'FAILED'}; device state ${formatBytes(s.deviceState.bytes)}: ${s.deviceState.verified ? 'verified' : 'FAILED'}`);
  out.push(
    `  free pages after finish ${s.freePagesAfterFinish}, cold boot ${s.freePagesColdBoot}${s.freePagesAfterFinish === s.freePagesColdBoot ? ' (nothing leaked)' : ''}`,
  );
  out.push(`  time: ${Object.entries(s.ms)
    .map(([k, v]) => `${k} ${ms(v)}`)
    .join(', ')}`);
  for (const e of s.errors) out.push(`  error: ${e}`);
  return out;
}

export function formatVmm(r: VmmReport): string {
  const o = r.options;
  return [
    `kho demo --vmm: a VMM's ${formatBytes(o.guest)} guest across a live update through LUO (seed ${o.seed}, ${formatBytes(o.ram)} machine, ${o.fill} fill)`,
    ...formatFirst(r.first),
    ...formatSecond(r.second),
    ...formatBlackout(r.blackout),
    r.ok ? 'RESULT: every byte of the guest verified after kexec' : 'RESULT: FAILED',
  ].join('\n');
}

/** The explorer's view of a VMM run, from what `rec` heard on the machine's bus. */
export function vmmReportData(rec: RunRecorder, command: string, r: VmmReport): RunPage {
  const files = r.first.sessions.flatMap((s) => s.files.map((f) => [`session ${s.name}, token ${f.token}`, `${f.handler}: ${f.what}, ${formatBytes(f.bytes)}, ${f.folios} folios, record ${f.record}`] as const));
  const compatible = rec.atJump.get(1)?.facts['root compatible'];
  const timing = (ms: Record<string, number>): string => Object.entries(ms).map(([k, v]) => `${k} ${v.toFixed(2)} ms`).join(', ');
  return {
    title: 'kho demo --vmm: a guest across a live update through LUO',
    command,
    ok: r.ok,
    summary: [
      ['machine', `${formatBytes(r.options.ram)} of RAM, seed ${r.options.seed}, ${r.options.fill} fill`],
      ['guest', `${formatBytes(r.first.guestBytes)} in ${r.first.guestFolios} folios, device state ${formatBytes(r.first.deviceStateBytes)}`],
      ['root compatible', compatible === undefined ? '(none heard)' : String(compatible)],
      ...files,
      ['generation 1 time', timing(r.first.ms)],
      ['generation 2 time', timing(r.second.ms)],
      ['blackout total', `${r.blackout.totalMs.toFixed(3)} ms`],
      ['result', r.ok ? 'every byte of the guest verified after kexec' : 'FAILED'],
    ],
    generations: [
      { g: 1, phases: rec.phases.get(1) ?? {}, preservedBytes: r.first.guestBytes + r.first.deviceStateBytes },
      { g: 2, phases: rec.phases.get(2) ?? {}, verified: r.ok },
    ],
    kexecs: [
      {
        from: 1,
        to: 2,
        verified: r.ok,
        stats: [...Object.entries(r.blackout.phases).map(([k, v]) => [`blackout: ${k}`, `${v.toFixed(3)} ms`] as const), ['blackout total', `${r.blackout.totalMs.toFixed(3)} ms`]],
        checks: formatSecond(r.second).map((l) => l.trim()),
        before: rec.atJump.get(1),
        after: rec.afterBoot.get(2),
        handover: rec.handovers.get(1),
      },
    ],
  };
}

interface Io {
  out(s: string): void;
  exit(code: number): void;
  isTTY?: boolean;
}

/** `kho demo --vmm`. */
export function vmmDemoCommand(flags: VmmFlags, cmd: Command, io: Io, describe: string): void {
  const o = vmmOptions(flags, cmd);
  const progress = createProgress(!flags.json && io.isTTY === true, o.guest);
  let recorder: RunRecorder | undefined;
  let r: VmmReport;
  try {
    r = runVmm(o, {
      observe: (bus) => {
        if (flags.report) recorder = new RunRecorder(bus);
      },
      progress: (step, done) => progress.update(done, step),
    });
  } finally {
    progress.stop();
  }
  io.out(`${flags.json ? JSON.stringify(r, null, 2) : formatVmm(r)}\n`);
  if (recorder && flags.report) {
    const html = renderRunExplorer(vmmReportData(recorder, describe, r));
    writeFileSync(flags.report, html);
    if (!flags.json) io.out(`report: ${flags.report} (${formatBytes(Buffer.byteLength(html))} written)\n`);
  }
  io.exit(r.ok ? 0 : 1);
}

/** `kho kexec --vmm --image F`: the first half, and the image with the VMM's settings in its machine note. */
export function vmmKexecCommand(flags: VmmFlags & { image: string }, cmd: Command, io: Io): void {
  const o = vmmOptions(flags, cmd);
  const { machine, params, first } = runVmmFirst(o);
  const vmm: VmmImageInfo = { guest: o.guest, seed: o.seed, fill: o.fill, cmdline: o.cmdline, ms: first.ms };
  writeHandoverImage(flags.image, machine, params, { cmdline: params.cmdline, tracker: o.tracker ?? 'radix', vmm });
  if (flags.json) io.out(`${JSON.stringify({ image: flags.image, ...first }, null, 2)}\n`);
  else io.out(`${[...formatFirst(first), `wrote ${flags.image}: ${formatBytes(machine.device(PhysicalMemory).populatedBytes)} of populated RAM`].join('\n')}\n`);
  io.exit(0);
}

/** `kho boot --image F` of an image `kho kexec --vmm` wrote: the VMM's second half. */
export function vmmBootCommand(loaded: LoadedImage, vmm: VmmImageInfo, flags: { tracker?: TrackerKind; json?: boolean }, io: Io): void {
  const written = loaded.extras.tracker ?? 'radix';
  if (!flags.tracker && !isTrackerKind(written)) throw new KernelError(Errno.EINVAL, `image: tracker '${written}' is not known (give --tracker)`);
  const o: VmmOptions = { ...DEFAULT_VMM, guest: vmm.guest, seed: vmm.seed, fill: vmm.fill, cmdline: vmm.cmdline, tracker: flags.tracker ?? (written as TrackerKind), ram: loaded.ranges.reduce((n, r) => n + r.size, 0) };
  const second = runVmmSecond(loaded.machine, loaded.params, o, loaded.ranges);
  const blackout = blackoutOf(vmm.ms, second.ms);
  if (flags.json) io.out(`${JSON.stringify({ ...second, blackout }, null, 2)}\n`);
  else io.out(`${[...formatSecond(second), ...formatBlackout(blackout), second.ok ? 'RESULT: every byte of the guest verified after kexec' : 'RESULT: FAILED'].join('\n')}\n`);
  io.exit(second.ok ? 0 : 1);
}
