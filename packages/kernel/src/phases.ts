/**
 * The lifecycle phases of docs/design.md, in the order a kernel sees them. Boot phases run on every boot; the update
 * phases run when a live update is started; `cancel` undoes a prepare/serialize that did not reach the jump.
 */
export enum Phase {
  /** memblock from the RAM map; with a handover: validate the FDT, mark scratch, scratch-only. */
  BootEarly = 'boot:early',
  /** walk the incoming tracker (reserve, no-init, stamp); hand free memory to the buddy allocator. */
  BootMm = 'boot:mm',
  /** KHO outgoing state; subsystems initialise. */
  BootLate = 'boot:late',
  /** live update starts: preserve memory, write ABI structs, add subtrees. */
  Prepare = 'prepare',
  /** just before the jump: write the final bytes (no tracker finalize). */
  Serialize = 'serialize',
  /** the jump: stop touching preserved memory; the kernel is disposed afterwards. */
  Kexec = 'kexec',
  /** the new kernel, after boot: retrieve subtrees, restore objects, verify. */
  Restore = 'restore',
  /** after restore: free handover metadata, report what nobody restored. */
  Finish = 'finish',
  /** undo of prepare/serialize when the update does not reach the jump. */
  Cancel = 'cancel',
}

export const BOOT_PHASES = [Phase.BootEarly, Phase.BootMm, Phase.BootLate] as const;
export type BootPhase = (typeof BOOT_PHASES)[number];
