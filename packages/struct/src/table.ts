import type { FieldInfo, Fields, Layout } from './layout';

/**
 * A layout as a Markdown table (offset, size, field, type), the form the ABI documents in docs/abi use, so a test
 * can check that a document's table is the layout's. Reserved and padding fields appear in parentheses.
 */
export function layoutTable(layout: { readonly table: readonly FieldInfo[] }): string {
  const rows = layout.table.map((f) => `| ${f.offset} | ${f.size} | ${f.hidden ? `(${f.name})` : f.name} | ${f.type} |`);
  return ['| off | size | field | type |', '|---|---|---|---|', ...rows].join('\n');
}

/**
 * The byte offset of every field of `layout`, reserved and padding fields included, as a plain object
 * (`{ magic: 0, version: 4, … }`). For code that reads fields in place at fixed offsets (hot loops over RAM,
 * in-place updates) and for the offset tables packages exported before their layouts were declared here: the
 * offsets still come from the one declaration.
 */
export function offsetTable<F extends Fields>(layout: Layout<F>): { readonly [K in keyof F]: number } {
  return Object.fromEntries(layout.table.map((f) => [f.name, f.offset])) as { [K in keyof F]: number };
}
