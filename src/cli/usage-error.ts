/** A command line the keys CLI cannot run as given: it prints the usage and exits 2. */
export class UsageError extends Error {}
