/**
 * The allowed directions of imports in src/ (docs/architecture.md draws them). `npm run lint` runs these
 * rules through scripts/check-architecture.mjs (dependency-cruiser's own CLI refuses Node 20; on Node
 * ≥ 22 `npx depcruise src --config .dependency-cruiser.cjs` reads the same file).
 *
 * Folders are ordered from the ground up: a folder imports only itself and folders below it. That makes
 * "infrastructure never imports features", "no two folders import each other" and "no cycle between
 * folders" one rule. Across features, only a feature's public files may be imported: the rest is its
 * own business.
 */

/** The ground: leaf modules everything may use. They import nothing above them. */
const FOUNDATION = ['clock', 'errors', 'ids', 'crypto', 'card-data', 'metrics', 'config'];
/** Shared infrastructure: knows no feature. */
const INFRASTRUCTURE = ['logging', 'db', 'scheduling', 'ratelimit', 'auth', 'audit', 'http'];
/**
 * Features, each above the ones it may use: keys (data keys, master key) under everything that
 * encrypts; mtls and events on keys; cards writes outbound events; shoppers is who a reference means;
 * payments on cards and shoppers; webhooks feed payments; loyalty earns on payments.
 */
const FEATURES = ['keys', 'mtls', 'events', 'cards', 'shoppers', 'payments', 'webhooks', 'loyalty', 'health'];
/**
 * Tools: clients of the service's HTTP API that a CLI runs (`simulate/`: signed test deliveries). Above
 * every feature, so nothing in src/ but the CLIs imports them; they see features' public files only.
 */
const TOOLS = ['simulate'];
const ORDER = [...FOUNDATION, ...INFRASTRUCTURE, ...FEATURES, ...TOOLS];

/**
 * A feature's public surface: what other features may import. Everything else in the folder is
 * internal. A file is listed here because another feature needs it, for the reason given.
 */
const PUBLIC = {
  // The key ring (data keys for a purpose), the master key (seals), the field-set registry's types.
  // client-ca.ts: the interface mtls implements for the one purpose whose key is a CA.
  // master-key-types.ts: the master-key source's contract (seals, readiness), without the sources.
  // reference-digests.ts: the digest stored in place of a UUID id that reads as a card number.
  keys: [
    'key-ring\\.ts',
    'master-key-source\\.ts',
    'master-key-types\\.ts',
    'field-sets\\.ts',
    'client-ca\\.ts',
    'reference-digests\\.ts',
  ],
  // The verifier the HTTP layer is given; the certificates' own encrypted field set.
  mtls: ['client-certificate-verifier\\.ts', 'client-certificate-records\\.ts'],
  // The outbox a feature writes its events into, and the event catalogue.
  events: ['outbox-store\\.ts', 'event-types\\.ts', 'points-events\\.ts'],
  // The vault service (loyalty enrols by card).
  cards: ['vault-service\\.ts'],
  // Who a shopper reference means, and who may reach it.
  shoppers: ['shopper-access\\.ts'],
  // The payment facts and transitions loyalty earns on and webhooks feed.
  payments: ['payment-event\\.ts', 'payment-state\\.ts', 'payment-service\\.ts'],
  webhooks: [],
  loyalty: [],
  health: [],
};

const below = (folder) => ORDER.slice(0, ORDER.indexOf(folder));
const above = (folder) => ORDER.slice(ORDER.indexOf(folder) + 1);
const folders = (list) => `^src/(${list.join('|')})/`;

const orderRules = ORDER.filter((f) => above(f).length > 0).map((folder) => ({
  name: `${folder}-imports-only-below`,
  comment: `src/${folder}/ may import only folders below it: ${below(folder).length === 0 ? 'none' : below(folder).join(', ')}.`,
  severity: 'error',
  from: { path: `^src/${folder}/` },
  to: { path: folders(above(folder)) },
}));

const publicSurfaceRules = FEATURES.map((feature) => ({
  name: `${feature}-internals-stay-inside`,
  comment:
    `Another feature may import from src/${feature}/ only its public files` +
    ` (${PUBLIC[feature].length === 0 ? 'none' : PUBLIC[feature].join(', ').replaceAll('\\', '')}).`,
  severity: 'error',
  from: { path: folders([...FEATURES, ...TOOLS].filter((f) => f !== feature)) },
  to: {
    path: `^src/${feature}/`,
    ...(PUBLIC[feature].length === 0 ? {} : { pathNot: `^src/${feature}/(${PUBLIC[feature].join('|')})$` }),
  },
}));

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'No module reaches itself through its imports (type-only imports included).',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'src-not-tests',
      comment: 'src/ never imports test/ or bench/.',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'composition-roots-are-tops',
      comment:
        'main.ts, service.ts, core.ts (the core every root opens), encrypted-field-sets.ts and the CLIs ' +
        'compose the features: they may import anything, and nothing in a folder of src/ imports them.',
      severity: 'error',
      from: { path: folders(ORDER) },
      to: { path: '^src/([^/]+\\.ts$|cli/)' },
    },
    {
      name: 'every-folder-is-placed',
      comment:
        'A folder of src/ that is in no layer would escape every rule above: place it in FOUNDATION, ' +
        'INFRASTRUCTURE, FEATURES or TOOLS (and in docs/architecture.md).',
      severity: 'error',
      from: { path: '^src/[^/]+/', pathNot: `^src/(${[...ORDER, 'cli'].join('|')})/` },
      to: {},
    },
    {
      name: 'every-imported-folder-is-placed',
      comment: 'Nothing imports a folder of src/ that is in no layer (see every-folder-is-placed).',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^src/[^/]+/', pathNot: `^src/(${[...ORDER, 'cli'].join('|')})/` },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'Every import resolves.',
      severity: 'error',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
    ...orderRules,
    ...publicSurfaceRules,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'], conditionNames: ['import', 'require', 'node', 'default'] },
    reporterOptions: { text: { highlightFocused: true } },
  },
  // Exported for scripts/check-architecture.mjs and docs.
  layers: { FOUNDATION, INFRASTRUCTURE, FEATURES, TOOLS, PUBLIC },
};
