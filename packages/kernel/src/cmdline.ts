import { Errno, KernelError } from './errno';

/**
 * A kernel command line: whitespace-separated `key=value` or bare `flag` words; double quotes group a value
 * with spaces. A key may occur several times (`reserve_mem=` does); `get` returns the last, `getAll` every one.
 */
export class CommandLine {
  private readonly params: Array<{ key: string; value: string | undefined }>;

  constructor(readonly text = '') {
    this.params = parseCommandLine(text);
  }

  /** True when `key` occurs, with or without a value. */
  has(key: string): boolean {
    return this.params.some((p) => p.key === key);
  }

  /** The value of the last occurrence of `key`; undefined if absent or given as a bare flag. */
  get(key: string): string | undefined {
    for (let i = this.params.length - 1; i >= 0; i--) if (this.params[i].key === key) return this.params[i].value;
    return undefined;
  }

  /** The values of every occurrence of `key`, in order (bare flags give ''). */
  getAll(key: string): string[] {
    return this.params.filter((p) => p.key === key).map((p) => p.value ?? '');
  }

  /** A boolean parameter: `key`, `key=1|on|y|yes|true` → true; `key=0|off|n|no|false` → false; absent → `dflt`. */
  getBool(key: string, dflt: boolean): boolean {
    if (!this.has(key)) return dflt;
    const v = this.get(key);
    if (v === undefined || /^(1|on|y|yes|true)$/i.test(v)) return true;
    if (/^(0|off|n|no|false)$/i.test(v)) return false;
    throw new KernelError(Errno.EINVAL, `command line: ${key}='${v}' is not a boolean (wanted on/off, 1/0, y/n)`);
  }

  toString(): string {
    return this.text;
  }
}

function parseCommandLine(text: string): Array<{ key: string; value: string | undefined }> {
  const out: Array<{ key: string; value: string | undefined }> = [];
  let i = 0;
  while (i < text.length) {
    while (i < text.length && /\s/.test(text[i])) i++;
    if (i >= text.length) break;
    let word = '';
    let quoted = false;
    while (i < text.length && (quoted || !/\s/.test(text[i]))) {
      if (text[i] === '"') quoted = !quoted;
      else word += text[i];
      i++;
    }
    if (quoted) throw new KernelError(Errno.EINVAL, `command line: unterminated quote in '${text}'`);
    const eq = word.indexOf('=');
    out.push(eq < 0 ? { key: word, value: undefined } : { key: word.slice(0, eq), value: word.slice(eq + 1) });
  }
  return out;
}
