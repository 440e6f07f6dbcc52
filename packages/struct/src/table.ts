import type { FieldInfo } from './layout';

/**
 * A layout as a Markdown table (offset, size, field, type), the form the ABI documents in docs/abi use, so a test
 * can check that a document's table is the layout's. Reserved and padding fields appear in parentheses.
 */
export function layoutTable(layout: { readonly table: readonly FieldInfo[] }): string {
  const rows = layout.table.map((f) => `| ${f.offset} | ${f.size} | ${f.hidden ? `(${f.name})` : f.name} | ${f.type} |`);
  return ['| off | size | field | type |', '|---|---|---|---|', ...rows].join('\n');
}
