/**
 * A live scrape of a test service's /metrics after traffic that touches the main families: a signed
 * platform delivery (applied, so a group-commit batch), a refused one, a client API request, and a
 * path the contract does not have, with a card number in it (which must not reach a label).
 */
import { signToken } from './auth.js';
import type { TestService } from './harness.js';
import { TEST_PANS } from './pans.js';
import { paymentId, platformEvent, postPlatform } from './webhooks.js';

export const PAN_IN_PATH = TEST_PANS.mastercard[0] as string;

export async function exercisedScrape(svc: TestService): Promise<string> {
  const applied = await postPlatform(
    svc,
    platformEvent({ paymentId: paymentId('metrics'), card: { pan: TEST_PANS.visa[0] as string } }),
  );
  if (applied.status !== 200) throw new Error(`the seed delivery answered ${applied.status}`);
  await postPlatform(svc, platformEvent({ paymentId: paymentId('metrics') }), {
    secrets: [`whsec_${Buffer.alloc(32, 7).toString('base64')}`],
  });
  await svc.request('GET', '/v1/whoami', { token: await signToken({ scope: 'loyalty:admin' }) });
  await svc.request('GET', `/v1/cards/${PAN_IN_PATH}/nothing-here`);
  const res = await svc.request('GET', '/metrics', { token: await signToken({ scope: 'metrics:read' }) });
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return res.text;
}
