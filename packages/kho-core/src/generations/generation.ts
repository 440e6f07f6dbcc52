/**
 * A generation of KHO's root FDT: the compatible string a kernel writes at the root and accepts from the previous
 * kernel, and everything that string implies. Generations are data: the writer and reader of the root FDT
 * (`../root-fdt.ts`) and the preservation API consult the generation instead of branching on versions, so a new
 * generation is one file in this folder and one line in `registry.ts`.
 */
export interface KhoGeneration {
  /** The value of `kho_abi=` that selects it: 'v1', 'v2', 'v3', 'v4', … */
  readonly id: string;
  /** The root `compatible` string, written as a single-entry list and compared whole. */
  readonly compatible: string;
  /** One line for tables: what it is and where it comes from. */
  readonly title: string;
  /** Whether a Linux release writes it (false for the project's own forms and RFC branches). */
  readonly mainline: boolean;
  /** The `uname -r` a lab kernel of this generation reports (kexec-metadata's previous_release). */
  readonly release: string;
  /** Kind of the preserved-memory map behind `preserved-memory-map` (a tracker descriptor's `kind`). */
  readonly tracker: string;
  /** The subtree property that holds the blob's phys: `fdt` (kho-v1) or `preserved-data`. */
  readonly subtreeAddress: 'fdt' | 'preserved-data';
  /** Subtrees carry `blob-size`; retrieving one without it is EINVAL. */
  readonly blobSize: boolean;
  /** KHO writes the kexec-metadata subtree at boot and reads the previous kernel's. */
  readonly kexecMetadata: boolean;
  /** preserve_pages lowers a block's order while it would span two NUMA nodes (Linux 7.1). */
  readonly numaClamp: boolean;
  /**
   * The largest order restore accepts: MAX_PAGE_ORDER (10) in kho-v1 and kho-v2, whose restore refused larger
   * blocks (so a large preserve_pages range could not come back), unbounded from kho-v3 on.
   */
  readonly restoreMaxOrder: number;
}
