/**
 * Colours of the explorer. Kinds have fixed colours; each owner (the plugin that preserved a block, or the
 * subtree that names it) gets a hue from its name alone, so the same owner has the same colour in every report.
 */

export const KIND_COLOURS: Readonly<Record<string, string>> = {
  free: '#e8f5e9',
  'free-scratch': '#b3e5fc',
  allocated: '#90a4ae',
  reserved: '#5d4037',
  tracker: '#fdd835',
  populated: '#b0bec5',
  empty: '#f5f5f5',
};

export const KIND_LABELS: Readonly<Record<string, string>> = {
  free: 'free (buddy allocator)',
  'free-scratch': 'free scratch (movable allocations only)',
  allocated: 'allocated',
  reserved: 'reserved (kernel image, memmap, kexec segments)',
  tracker: 'tracker metadata (the preserved-memory map)',
  preserved: 'preserved (one colour per owner)',
  incoming: 'handed over, not restored yet (lighter: the owner that preserved it)',
  populated: 'in the image, not preserved',
  empty: 'not in the image (never written)',
};

/** Hues chosen for the project's own plugins (apart enough to tell at a glance); others hash their name. */
const KNOWN_HUES: Readonly<Record<string, number>> = {
  kho: 0,
  'kho-test': 280,
  kstate: 200,
  memfd: 35,
  vmalloc: 120,
  memblock: 330,
  'scenario-workload': 160,
  'kho-slab': 60,
  liveupdate: 250,
};

/** FNV-1a of the name, folded onto the colour wheel away from the known hues' neighbourhoods when it can be. */
export function ownerHue(owner: string): number {
  const known = KNOWN_HUES[owner];
  if (known !== undefined) return known;
  let h = 0x811c9dc5;
  for (let i = 0; i < owner.length; i++) h = Math.imul(h ^ owner.charCodeAt(i), 16777619) >>> 0;
  return h % 360;
}

/** A preserved block's colour; an incoming block is the same hue, lighter. */
export function ownerColour(owner: string, incoming = false): string {
  const hue = ownerHue(owner);
  return incoming ? `hsl(${hue} 60% 72%)` : `hsl(${hue} 72% 44%)`;
}
