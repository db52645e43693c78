/**
 * Amounts as people type them (`42.00`, `1500` yen, `12.345` dinars) ↔ the minor units every gateway
 * sends. The currency's exponent is given by the composition root (src/cli/simulate.ts passes the
 * loyalty programme's own, the one points are counted by: Node's ICU disagrees with ISO 4217 on a few
 * currencies, IQD among them).
 */

export interface Money {
  readonly value: number;
  readonly currency: string;
}

/** ISO 4217 exponent of a currency: 2 for EUR, 0 for JPY, 3 for KWD. */
export type CurrencyExponent = (currency: string) => number;

export interface Amounts {
  /** `42.00` EUR → 4200; refuses more decimals than the currency has, and anything not a plain amount. */
  parse(text: string, currency: string): Money;
  format(money: Money): string;
  /** The purchase story's default refund: a quarter of the amount, down to a whole currency unit. */
  quarterOf(money: Money): Money;
}

export function amounts(exponent: CurrencyExponent): Amounts {
  return {
    parse(text, currency) {
      if (!/^[A-Z]{3}$/.test(currency)) throw new Error('--currency must be an ISO 4217 code such as EUR');
      const digits = exponent(currency);
      const match = /^(\d{1,12})(?:\.(\d+))?$/.exec(text);
      if (match === null)
        throw new Error(`--amount must be a positive amount such as 42.00 (got ${text.slice(0, 20)})`);
      const fraction = match[2] ?? '';
      if (fraction.length > digits) {
        throw new Error(`--amount: ${currency} has ${digits} decimal${digits === 1 ? '' : 's'} (got ${text})`);
      }
      const value = Number(match[1]) * 10 ** digits + Number(fraction.padEnd(digits, '0') || '0');
      if (value <= 0) throw new Error('--amount must be more than zero');
      return { value, currency };
    },
    format(money) {
      const digits = exponent(money.currency);
      const text = String(money.value).padStart(digits + 1, '0');
      const major = digits === 0 ? text : `${text.slice(0, -digits)}.${text.slice(-digits)}`;
      return `${major} ${money.currency}`;
    },
    quarterOf(money) {
      const unit = 10 ** exponent(money.currency);
      const quarter = Math.floor(money.value / 4 / unit) * unit;
      return { value: quarter > 0 ? quarter : Math.max(1, Math.floor(money.value / 4)), currency: money.currency };
    },
  };
}
