// Structured logging: one Logger shape for every module (winston's fits it), and the agent's winston
// setup: JSON lines on stderr with level, message, and the object (namespace/name) and op as fields.

import winston from 'winston';

export interface Logger {
  debug(msg: string, meta?: Record<string, unknown>): void;
  info(msg: string, meta?: Record<string, unknown>): void;
  warn(msg: string, meta?: Record<string, unknown>): void;
  error(msg: string, meta?: Record<string, unknown>): void;
}

/** kube-proxy's --v: 0-1 info, 2-3 adds debug, 4+ everything winston has. */
export function levelForVerbosity(v: number): string {
  return v >= 4 ? 'silly' : v >= 2 ? 'debug' : 'info';
}

export function createLogger(verbosity = 0, format: 'json' | 'text' = 'json'): winston.Logger {
  return winston.createLogger({
    level: levelForVerbosity(verbosity),
    format:
      format === 'json'
        ? winston.format.combine(winston.format.timestamp(), winston.format.json())
        : winston.format.combine(winston.format.timestamp(), winston.format.printf(({ timestamp, level, message, ...meta }) =>
            `${timestamp} ${level} ${message}${Object.keys(meta).length ? ' ' + JSON.stringify(meta) : ''}`)),
    transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug', 'verbose', 'silly'] })],
  });
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
