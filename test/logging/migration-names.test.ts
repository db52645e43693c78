/**
 * The start-up log's `database migrated` line (src/service.ts) names the migrations applied, whose
 * 14-digit timestamps the card-data guard would flag in free text: the logger keeps them readable in
 * the `migrations` field only (src/logging/logger.ts, UNMASKED_FIELDS), while a card number in any
 * other field of the same line, or a value in `migrations` that is not a migration name, is masked
 * (issue 16: a detector that cries wolf garbles the evidence auditors read).
 */
import { expect } from 'chai';
import { createTestDatabase } from '../support/database.js';
import { startTestService } from '../support/harness.js';
import { captureLogs } from '../support/log-capture.js';

const NAME = '20261130000700_subscription_hardening';

describe('start-up log: migration names stay readable, card data beside them does not', function () {
  this.timeout(120_000);

  it('when the service migrates a blank database, then the database migrated line names every migration as written', async () => {
    const svc = await startTestService({ db: await createTestDatabase() });
    try {
      const line = svc
        .logs()
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l['msg'] === 'database migrated');
      expect(line, 'the database migrated line').to.not.equal(undefined);
      expect(line?.['migrations']).to.include(NAME);
      expect(svc.logs()).to.not.contain('[PAN …0700]');
    } finally {
      await svc.close();
    }
  });

  it('when the same line carries a card number in another field, then that field is masked and the names are kept', () => {
    const captured = captureLogs();
    captured.logger.info(
      {
        migrations: [NAME, '20261206000100_card_data_guard'],
        detail: 'order 4111 1111 1111 1111',
        nested: { reference: '5105.1051.0510.5100' },
      },
      'database migrated',
    );
    captured.logger.flush();
    const [line] = captured.lines();
    expect(line?.['migrations']).to.deep.equal([NAME, '20261206000100_card_data_guard']);
    expect(line?.['detail']).to.equal('order [PAN …1111]');
    expect(line?.['nested']).to.deep.equal({ reference: '[PAN …5100]' });
    expect(captured.text()).to.not.match(/4111\D?1111\D?1111\D?1111|5105\D?1051\D?0510\D?5100/);
  });

  it('when the migrations field holds something that is not a migration name, then the whole field is masked like any other', () => {
    const captured = captureLogs();
    captured.logger.info({ migrations: [NAME, '4111111111111111_x', '6011/0009/9013/9424'] }, 'database migrated');
    captured.logger.flush();
    const [line] = captured.lines();
    // All or nothing: a card number cannot ride along with real names, so the names are read as text too.
    expect(line?.['migrations']).to.deep.equal(['[PAN …0700]_subscription_hardening', '[PAN …1111]_x', '[PAN …9424]']);
  });
});
