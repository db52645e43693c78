/**
 * Card data written as serialised JSON (a log line, a problem body) with a control character between
 * its groups: JSON writes a newline or a tab as a backslash and a letter (`4111\n1111…`), and the guard
 * must read that escape as a separator, not as a letter that ends the digit run (issue 16, review
 * findings 4 and 5). The masked output stays valid JSON.
 */
import { expect } from 'chai';
import express from 'express';
import type { AddressInfo } from 'node:net';
import { containsCardData, maskCardData, mayHoldCardData } from '../../src/card-data/card-data-guard.js';
import { AppError } from '../../src/errors/app-error.js';
import { sendProblem } from '../../src/http/problem.js';
import { maskLogLine } from '../../src/logging/logger.js';
import { captureLogs } from '../support/log-capture.js';

const SEPARATORS = ['\n', '\t', '\r', '\b', '\f', '\u2028', '"', '\\', '/'];

describe('card data in serialised JSON: escapes are separators', () => {
  describe('when a PAN is grouped by a control character and serialised, then the detector finds it', () => {
    for (const sep of SEPARATORS) {
      const serialised = JSON.stringify({ a: { b: [['4111', '1111', '1111', '1111'].join(sep)] } });
      it(`when the separator is written ${JSON.stringify(sep)}, then ${serialised} is masked and stays JSON`, () => {
        expect(mayHoldCardData(serialised)).to.equal(true);
        expect(containsCardData(serialised)).to.equal(true);
        const masked = maskCardData(serialised);
        expect(JSON.parse(masked)).to.deep.equal({ a: { b: ['[PAN …1111]'] } });
      });
    }
  });

  it('when a \\uXXXX escape stands between groups, then its hex digits are not counted and the PAN is found', () => {
    expect(maskCardData('"4111\\u00201111\\u00a01111\\u20281111"')).to.equal('"[PAN …1111]"');
    expect(containsCardData('"12\\u0034567"')).to.equal(false);
  });

  it('when an escaped backslash is followed by a letter, then the letter still ends the run', () => {
    expect(containsCardData('"4111\\\\n1111\\\\n1111\\\\n1111"')).to.equal(false);
  });

  it('when a log line holds a PAN grouped by tabs or newlines, then the written line is masked', () => {
    expect(maskLogLine('{"v":"4111\\t1111\\t1111\\t1111"}\n')).to.equal('{"v":"[PAN …1111]"}\n');
    const captured = captureLogs();
    captured.logger.info(
      { v: '5555\t5555\t5555\t4444', w: ['3782\n822463\n10005'] },
      'ref 4111\r\n1111\r\n1111\r\n1111',
    );
    captured.logger.flush();
    const [line] = captured.lines();
    expect(line?.['v']).to.equal('[PAN …4444]');
    expect(line?.['w']).to.deep.equal(['[PAN …0005]']);
    expect(line?.['msg']).to.equal('ref [PAN …1111]');
  });

  it('when a problem detail holds a PAN grouped by newlines, then the problem body is masked and valid JSON', async () => {
    const app = express();
    app.get('/', (_req, res) => {
      sendProblem(res, new AppError('CARD_NUMBER_NOT_ALLOWED', { detail: 'ref 4111\n1111\n1111\n1111' }), 'req_1');
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const response = await fetch(`http://127.0.0.1:${port}/`);
      const text = await response.text();
      expect(text).not.to.match(/4111\D{0,6}1111\D{0,6}1111\D{0,6}1111/);
      expect((JSON.parse(text) as { detail: string }).detail).to.equal('ref [PAN …1111]');
    } finally {
      server.close();
    }
  });
});
