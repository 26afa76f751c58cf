// Errors as values: every refusal from the kernel becomes a KernelError carrying the errno, its
// symbolic code, the operation that caused it and a readable description of the object.

import { constants as osConstants } from 'node:os';
import type { KernelOp } from './kernel/types.js';

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([name, value]) => [value, name]));
// Aliases share a number: name them as Linux's errno.h does.
for (const name of ['EAGAIN', 'EOPNOTSUPP', 'EDEADLK'] as const) errnoNames.set(osConstants.errno[name], name);

export function errnoCode(errno: number): string {
  return errnoNames.get(Math.abs(errno)) ?? `E${Math.abs(errno)}`;
}

export function errnoNumber(code: string): number {
  const n = (osConstants.errno as Record<string, number>)[code];
  if (n === undefined) throw new Error(`unknown errno code ${code}`);
  return n;
}

const HINTS: Record<string, string> = {
  EPERM: 'the agent needs CAP_NET_ADMIN in the target network namespace',
  EACCES: 'the agent needs CAP_NET_ADMIN in the target network namespace',
};

export class KernelError extends Error {
  override readonly name = 'KernelError';
  readonly errno: number;
  readonly code: string;
  /** The operation the kernel refused, when the error belongs to one. */
  readonly op?: KernelOp;
  /** Index of that operation in the list given to apply(). */
  readonly index?: number;

  constructor(errno: number, what: string, op?: KernelOp, index?: number) {
    const code = errnoCode(errno);
    const hint = HINTS[code];
    super(`${what}: ${code}${hint ? ` (${hint})` : ''}`);
    this.errno = Math.abs(errno);
    this.code = code;
    this.op = op;
    this.index = index;
  }
}

/** The host-kernel feature kipvs needs is missing (no ip_vs module, no IPVS genl family). */
export class KernelSupportError extends Error {
  override readonly name = 'KernelSupportError';
}
