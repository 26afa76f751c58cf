// A logger that records instead of printing, so tests can assert what an operator would read.
import type { Logger } from '../../lib/log.js';

export interface Captured {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  meta?: Record<string, unknown>;
}

export function captureLogger(): Logger & { lines: Captured[]; errors(): string[] } {
  const lines: Captured[] = [];
  const at = (level: Captured['level']) => (msg: string, meta?: Record<string, unknown>) => void lines.push({ level, msg, meta });
  return {
    lines,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    errors: () => lines.filter((l) => l.level === 'error').map((l) => l.msg),
  };
}
