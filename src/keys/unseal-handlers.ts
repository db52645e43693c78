/**
 * HTTP adapter of the unseal protocol (unseal.ts): the status a custodian's CLI reads, one signed
 * share submission, one signed seal request. Authentication is the custodian's signature inside the
 * body (like a webhook's), checked by the Unsealer; the status is public like /readyz (Vault's
 * `sys/seal-status` likewise): a nonce, an ephemeral public key and counts, nothing secret.
 * On an instance whose master key is not in shares, every one answers 404.
 */
import type { Request } from 'express';
import { AppError } from '../errors/app-error.js';
import { contractHandlers } from '../http/contract.js';
import type { HandlerMap } from '../http/types.js';
import type { Unsealer } from './unseal.js';

const originOf = (req: Request): string => `request:${req.id} ip:${req.ip ?? '-'}`;

export function unsealHandlers(unsealer: Unsealer | undefined): HandlerMap {
  const need = (): Unsealer => {
    if (unsealer === undefined) {
      throw new AppError('NOT_FOUND', {
        detail: 'This instance does not keep its master key in shares (MASTER_KEY_SOURCE).',
      });
    }
    return unsealer;
  };
  return contractHandlers({
    async getUnsealStatus(_req, res) {
      res.json(await need().status());
    },
    async submitUnsealShare(req, res) {
      const { submission } = req.valid.body;
      res.json(await need().submit(submission, originOf(req)));
    },
    async sealVault(req, res) {
      const { request } = req.valid.body;
      res.json(await need().seal(request, originOf(req)));
    },
  });
}
