import { expect } from 'chai';
import type { Operation } from '../../src/http/openapi.js';
import { signToken } from '../support/auth.js';
import { startTestService, type TestService } from '../support/harness.js';
import { captureLogs } from '../support/log-capture.js';
import { groupPan, panPattern } from '../support/pans.js';
import { rawRequest } from '../support/raw-request.js';

const PANS = ['4111111111111111', '5555555555554444', '378282246310005'] as const;

/** Each PAN as sent: plain, grouped by spaces, grouped by dashes. */
const WRITTEN = PANS.flatMap((pan) => [pan, groupPan(pan, ' '), groupPan(pan, '-')]);

/** Every scope that any operation of the contract names, so that requests get past authorisation. */
function allScopes(operations: readonly Operation[]): string {
  return [...new Set(operations.flatMap((op) => op.security.flatMap((s) => s.scopes)))].join(' ');
}

function pathWith(op: Operation, value: string): string {
  return op.pathTemplate.replace(/\{[^}]+\}/g, encodeURIComponent(value));
}

describe('PAN never logged: every operation of openapi.yaml, a PAN in every part of the request', () => {
  let svc: TestService;
  let sent = 0;

  before(async () => {
    svc = await startTestService();
  });
  after(() => svc.close());

  async function sendAll(op: Operation, written: string, authorization: string | undefined): Promise<void> {
    const encoded = encodeURIComponent(written);
    const mediaType = op.requestMediaType ?? 'application/json';
    const headers: Record<string, string> = {
      'x-request-id': written.replace(/ /g, '-'),
      'x-card-number': written,
      'user-agent': `pos-terminal/1.0 (${written})`,
      referer: `https://shop.example/checkout?pan=${encoded}`,
      cookie: `last_card=${encoded}`,
      'content-type': mediaType,
      ...(authorization === undefined ? {} : { authorization }),
    };
    const bodies = [
      JSON.stringify({ pan: written, [written]: written, card: { number: written, numbers: [written] } }),
      // Malformed: the parser's own error message would quote the input.
      `{"pan": "${written}", "cvc": `,
      written,
    ];
    const paths = [
      `${pathWith(op, written)}?pan=${encoded}&${encoded}=1&card%5Bnumber%5D=${encoded}`,
      `${pathWith(op, written)}/${encoded}`,
      `${pathWith(op, written)};pan=${encoded}`,
    ];
    for (const path of paths) {
      for (const body of bodies) {
        const res = await rawRequest(svc.url, { method: op.method.toUpperCase(), path, headers, body });
        expect(res.status, `${op.method} ${path}`).to.be.within(200, 599);
        for (const header of Object.values(res.headers)) expect(String(header)).not.to.match(panPattern(written));
        sent++;
      }
    }
    // And the clean request (no body, valid path) that reaches the handler when authorised.
    const clean = await rawRequest(svc.url, {
      method: op.method.toUpperCase(),
      path: pathWith(op, 'x'),
      headers: { ...headers, 'content-type': 'application/json' },
    });
    expect(clean.status).to.be.within(200, 599);
    sent++;
  }

  it('when requests carry PANs in path, query, headers and body, then the log holds none of them', async function () {
    // Every operation × 5 authorisations × 2 PAN spellings × 10 requests: it grows with the API.
    this.timeout(180_000);
    const operations = svc.service.spec.operations;
    expect(operations.length).to.be.greaterThan(0);
    const scopes = allScopes(operations);
    for (const written of WRITTEN) {
      const digits = written.replace(/\D/g, '');
      const authorizations = [
        undefined, // unauthenticated
        `Bearer ${await signToken({ scope: scopes })}`,
        // A token whose claims hold the PAN: the subject is logged with each request.
        `Bearer ${await signToken({ scope: scopes, subject: written, extraClaims: { jti: digits, note: written } })}`,
        `Bearer ${digits}`, // malformed token
        `Basic ${Buffer.from(`${digits}:${written}`).toString('base64')}`,
      ];
      for (const op of operations) {
        for (const authorization of authorizations) await sendAll(op, written, authorization);
      }
    }

    const logs = svc.logs();
    const requestLines = logs.split('\n').filter((l) => l.includes('"msg":"request"'));
    // The capture saw every request, so a clean result below means something.
    expect(requestLines.length).to.be.at.least(sent);
    expect(logs).to.contain('"subject":"[PAN …');
    for (const pan of PANS) {
      expect(logs, `PAN …${pan.slice(-4)} reached the log`).not.to.match(panPattern(pan));
    }
  });

  it('when anything is logged with a PAN in its message, fields, error or stack, then the output is masked', () => {
    const captured = captureLogs();
    const { logger } = captured;
    const error = new Error(`card ${PANS[0]} declined`);
    logger.error(
      {
        err: error,
        req: { headers: { authorization: `Bearer ${PANS[1]}`, 'x-card': groupPan(PANS[1], ' ') }, body: { any: 1 } },
        card: { pan: PANS[2], number: groupPan(PANS[2], '-') },
        [PANS[0]]: 'as a key',
      },
      `charge failed for ${groupPan(PANS[0], '-')}`,
    );
    logger.flush();
    const out = captured.text();
    expect(out).to.contain('charge failed for [PAN …1111]');
    expect(out).to.contain('"authorization":"[REDACTED]"');
    expect(out).to.contain('"body":"[REDACTED]"');
    for (const pan of PANS) expect(out).not.to.match(panPattern(pan));
  });
});
