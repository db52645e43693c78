/**
 * The metric names a PromQL expression selects, read by a small lexer: strings, label matchers,
 * range and subquery brackets, and `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` label
 * lists are removed; what is left that is a name, not a function or aggregation call, not a keyword
 * and not part of a number or a duration, is a metric name. Grafana's `$variables` are replaced first.
 * The syntax itself is checked by promtool (`promtool check rules`) in test/docs/dashboard.test.ts.
 */
const KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'inf',
  'nan',
  'atan2',
]);
const AGGREGATIONS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'group',
  'stddev',
  'stdvar',
  'count',
  'count_values',
  'bottomk',
  'topk',
  'quantile',
]);

/** Grafana's variables as PromQL can read them (a range for `$__rate_interval`, a word otherwise). */
export function withGrafanaVariables(expr: string): string {
  return expr
    .replace(/\$__(rate_interval|interval|range)\b/g, '5m')
    .replace(/\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?/g, 'grafana_variable');
}

export function metricNames(expr: string): string[] {
  let text = withGrafanaVariables(expr)
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^{}]*\}/g, ' ')
    .replace(/\[[^[\]]*\]/g, ' ');
  text = text.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)/g, ' ');
  const names = new Set<string>();
  const identifier = /(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?/g;
  for (const match of text.matchAll(identifier)) {
    const [, name, call] = match as unknown as [string, string, string | undefined];
    if (call !== undefined || KEYWORDS.has(name.toLowerCase()) || AGGREGATIONS.has(name)) continue;
    // A number's exponent or a duration's unit (`1e3`, `5m`) is preceded by a digit: excluded above.
    names.add(name);
  }
  return [...names];
}
