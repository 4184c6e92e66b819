/** Quoting for the names and values spliced into generated SQL (the trigger, install's DDL, enqueue). */

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
