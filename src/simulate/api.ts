/**
 * The few API calls the simulator makes around its deliveries, over plain HTTP as any client would:
 * resolve the card (`POST /v1/tokens`, `GET /v1/tokens/{token}`), link a gateway's alias to it
 * (`POST /v1/tokens/{token}/identifiers`, as an integrator does when a gateway first names a card),
 * send a delivery, read a balance. Every answer's text passes the card-data mask before it is shown.
 */
import { maskCardData } from '../card-data/card-data-guard.js';

export interface Answer {
  readonly status: number;
  /** The body as received, card data masked (there should be none). */
  readonly text: string;
  readonly json: unknown;
}

/** A refusal, as one line: `POST /v1/tokens answered 401 UNAUTHENTICATED: …`. */
export class ApiRefusal extends Error {
  constructor(
    readonly what: string,
    readonly answer: Answer,
  ) {
    super(`${what} answered ${answer.status} ${problemSummary(answer)}`);
  }
}

export function problemSummary(answer: Answer): string {
  const problem = (answer.json ?? {}) as { code?: unknown; detail?: unknown; title?: unknown };
  const code = typeof problem.code === 'string' ? problem.code : undefined;
  const reason = typeof problem.detail === 'string' ? problem.detail : problem.title;
  if (code === undefined) return answer.text.slice(0, 200);
  return typeof reason === 'string' ? `${code}: ${reason}` : code;
}

export interface Api {
  request(method: string, path: string, init?: { body?: string; headers?: Record<string, string> }): Promise<Answer>;
}

export function api(baseUrl: string): Api {
  const base = baseUrl.replace(/\/+$/, '');
  return {
    async request(method, path, init = {}) {
      let response: Response;
      try {
        response = await fetch(`${base}${path}`, {
          method,
          headers: init.headers ?? {},
          ...(init.body === undefined ? {} : { body: init.body }),
        });
      } catch (error) {
        const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
        const why = typeof cause?.code === 'string' ? cause.code : String(cause?.message ?? error);
        throw new Error(`cannot reach ${base} (${why}): is the service running (npm start)? Otherwise pass --url`, {
          cause: error,
        });
      }
      const text = maskCardData(await response.text());
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: response.status, text, json };
    },
  };
}

export interface ResolvedCard {
  readonly token: string;
  readonly shopperReference: string;
  readonly brand: string | undefined;
  readonly last4: string | undefined;
}

/** The card's token and shopper: tokenised (a PAN or PAR; the same card always gives the same token) or looked up. */
export async function resolveCard(
  client: Api,
  bearer: string,
  identifier: Readonly<Record<string, unknown>>,
): Promise<ResolvedCard> {
  const auth = { authorization: `Bearer ${bearer}` };
  const token = identifier['token'];
  const answer =
    typeof token === 'string'
      ? await client.request('GET', `/v1/tokens/${token}`, { headers: auth })
      : await client.request('POST', '/v1/tokens', {
          headers: { ...auth, 'content-type': 'application/json' },
          body: JSON.stringify(identifier),
        });
  const what = typeof token === 'string' ? 'GET /v1/tokens/{token}' : 'POST /v1/tokens';
  if (answer.status !== 200 && answer.status !== 201) throw new ApiRefusal(what, answer);
  const card = answer.json as { token: string; shopperReference: string; brand?: string; last4?: string };
  return { token: card.token, shopperReference: card.shopperReference, brand: card.brand, last4: card.last4 };
}

/** Links a gateway's alias to the card (200 when it already is). */
export async function linkAlias(
  client: Api,
  bearer: string,
  token: string,
  alias: { readonly namespace: string; readonly value: string },
): Promise<void> {
  const answer = await client.request('POST', `/v1/tokens/${token}/identifiers`, {
    headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
    body: JSON.stringify({ alias }),
  });
  if (answer.status !== 200 && answer.status !== 201) {
    throw new ApiRefusal(`POST /v1/tokens/{token}/identifiers (${alias.namespace})`, answer);
  }
}

export interface Balance {
  readonly available: number;
  readonly pending: number;
  readonly lifetimeEarned: number;
}

export type BalanceAnswer = Answer & { readonly balance: Balance };

export async function readBalance(client: Api, bearer: string, shopper: string): Promise<BalanceAnswer> {
  const answer = await client.request('GET', `/v1/shoppers/${shopper}/balance`, {
    headers: { authorization: `Bearer ${bearer}` },
  });
  if (answer.status !== 200) throw new ApiRefusal('GET /v1/shoppers/{shopper}/balance', answer);
  return { ...answer, balance: answer.json as Balance };
}
