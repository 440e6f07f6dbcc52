import { defineBench } from '@kho/kernel/bench';
import { DEFAULT_VMM, defaultVmmRam, runVmm } from '../src/vmm/run';

const GiB = 2 ** 30;

/**
 * The blackout of the VMM demo (freeze → the guest's memfds retrieved in the next kernel), by phase, at 1 GiB and
 * (outside --quick) 16 GiB of guest in 2 MiB folios: `luo/vmm-blackout-1g`, `luo/vmm-blackout-16g`. The guest is
 * filled sparsely (one page per folio: LUO copies no data, so the blackout does not depend on the bytes, and 16 GiB
 * of host memory is not needed); every byte is still verified after the measurement.
 */
defineBench({
  name: 'luo/vmm-blackout',
  run({ quick }) {
    return (quick ? [1] : [1, 16]).map((gib) => {
      const guest = gib * GiB;
      const r = runVmm({ ...DEFAULT_VMM, guest, ram: defaultVmmRam(guest), fill: 'sparse' });
      if (!r.ok) throw new Error(`the VMM demo (${gib} GiB) failed: ${r.second.errors.join('; ')}`);
      const phases = Object.fromEntries(Object.entries(r.blackout.phases).map(([k, v]) => [`${k}Ms`, +v.toFixed(3)]));
      return { bench: `luo/vmm-blackout-${gib}g`, value: +r.blackout.totalMs.toFixed(3), unit: 'ms', guestBytes: guest, folios: r.first.guestFolios, ...phases, bootMmMs: r.second.ms['boot.mm'], fill: 'sparse' };
    });
  },
});
