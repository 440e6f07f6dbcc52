/** ABI of this package (filled in by its implementation). */
export {};
