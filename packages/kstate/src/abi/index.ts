/** ABI of the kstate stream (filled in by the implementation). */
export {};
