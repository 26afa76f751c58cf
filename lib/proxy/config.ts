// The agent's proxy settings and where they come from: defaults, overridden by the ConfigMap
// (hot-reloaded), overridden by command-line flags. Parsing is pure; a bad ConfigMap value is an
// error naming the ConfigMap and that key keeps its previous value.

import type { V1ConfigMap } from '@kubernetes/client-node';
import type { IpvsTimeouts } from '../kernel/types.js';

/** The kernel's IPVS schedulers (net/netfilter/ipvs/ip_vs_*.c). */
export const SCHEDULERS = ['rr', 'wrr', 'lc', 'wlc', 'lblc', 'lblcr', 'dh', 'sh', 'sed', 'nq', 'mh', 'fo', 'ovf', 'twos'] as const;

/** Scheduler flags by name: IP_VS_SVC_F_SCHED1/2 as sh and mh read them (ipvsadm -b). */
export const SCHEDULER_FLAGS: Record<string, { scheduler: string; bit: number }> = {
  'sh-fallback': { scheduler: 'sh', bit: 0x8 },
  'sh-port': { scheduler: 'sh', bit: 0x10 },
  'mh-fallback': { scheduler: 'mh', bit: 0x8 },
  'mh-port': { scheduler: 'mh', bit: 0x10 },
};

export interface ProxyConfig {
  /** Default scheduler for services without the kipvs.io/scheduler annotation. */
  scheduler: string;
  /** Default scheduler flags (names from SCHEDULER_FLAGS) that go with `scheduler`. */
  schedulerFlags: string[];
  /** IPVS connection timeouts in seconds; 0 leaves the kernel's value. */
  timeouts: IpvsTimeouts;
}

export const DEFAULT_CONFIG: ProxyConfig = { scheduler: 'rr', schedulerFlags: [], timeouts: { tcp: 0, tcpFin: 0, udp: 0 } };

export interface ConfigError {
  object: string;
  reason: string;
}

export function isScheduler(s: string): boolean {
  return (SCHEDULERS as readonly string[]).includes(s);
}

/** Flag names → IP_VS_SVC_F_SCHED* bits for `scheduler`; throws with a readable reason. */
export function schedulerFlagBits(scheduler: string, names: readonly string[]): number {
  let bits = 0;
  for (const name of names) {
    const f = Object.hasOwn(SCHEDULER_FLAGS, name) ? SCHEDULER_FLAGS[name] : undefined;
    if (!f) throw new Error(`unknown scheduler flag "${name}" (known: ${Object.keys(SCHEDULER_FLAGS).join(', ')})`);
    if (f.scheduler !== scheduler) throw new Error(`scheduler flag "${name}" does not apply to scheduler "${scheduler}"`);
    bits |= f.bit;
  }
  return bits;
}

/**
 * The scheduler settings of the --ipvs-scheduler and --ipvs-scheduler-flags flags (agent and status),
 * as config overrides. Throws an Error naming the flag on an unknown scheduler or a flag that does
 * not fit it (flags without a scheduler are checked against sh, the first scheduler that has any).
 */
export function schedulerOverrides(scheduler: string | undefined, flagsText: string | undefined): Partial<ProxyConfig> {
  const overrides: Partial<ProxyConfig> = {};
  if (scheduler !== undefined) {
    if (!isScheduler(scheduler)) throw new Error(`--ipvs-scheduler: unknown scheduler "${scheduler}" (known: ${SCHEDULERS.join(' ')})`);
    [overrides.scheduler, overrides.schedulerFlags] = [scheduler, []];
  }
  if (flagsText !== undefined) {
    const flags = splitList(flagsText);
    try {
      schedulerFlagBits(scheduler ?? 'sh', flags);
    } catch (err) {
      throw new Error(`--ipvs-scheduler-flags: ${(err as Error).message}`);
    }
    overrides.schedulerFlags = flags;
  }
  return overrides;
}

export function splitList(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}

const TIMEOUT_KEYS: Record<string, keyof IpvsTimeouts> = { tcpTimeout: 'tcp', tcpFinTimeout: 'tcpFin', udpTimeout: 'udp' };

/**
 * The longest IPVS timeout every kernel takes: ip_vs_set_timeout refuses more than INT_MAX / HZ, and
 * HZ is at most 1000. A longer one would fail every sync at setTimeouts.
 */
export const MAX_TIMEOUT = Math.floor(0x7fffffff / 1000);

/** Parses a duration as kube-proxy's flags take it ('900s', '15m', '1h', or plain seconds) → seconds. */
export function parseSeconds(text: string): number {
  const m = /^\s*(\d+)\s*(s|m|h)?\s*$/.exec(text);
  if (!m) throw new Error(`"${text}" is not a duration (e.g. 900s, 15m, 1h)`);
  const n = Number(m[1]) * ({ s: 1, m: 60, h: 3600 }[m[2] ?? 's'] as number);
  if (n > MAX_TIMEOUT) throw new Error(`"${text}" is too long (at most ${MAX_TIMEOUT}s)`);
  return n;
}

const NOT_A_STRING = Symbol('not a string');

/**
 * The ConfigMap's data (keys: scheduler, schedulerFlags, tcpTimeout, tcpFinTimeout, udpTimeout) on top of
 * `defaults`. A key that is absent takes the default; a bad value is reported and that setting keeps its
 * `previous` value (the last good one), so a typo never switches every service to another scheduler.
 */
export function applyConfigMap(
  defaults: ProxyConfig,
  cm: V1ConfigMap | undefined,
  previous: ProxyConfig = defaults,
): { config: ProxyConfig; errors: ConfigError[] } {
  const errors: ConfigError[] = [];
  if (!cm) return { config: defaults, errors };
  const object = `ConfigMap ${cm.metadata?.namespace ?? 'default'}/${cm.metadata?.name ?? '?'}`;
  // Untyped JSON (or YAML from a manifest directory): data must be a map, and each value a string.
  const raw: unknown = cm.data ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    errors.push({ object, reason: `data is not a map (${JSON.stringify(raw)}); keeping the previous configuration` });
    return { config: { ...previous, schedulerFlags: [...previous.schedulerFlags], timeouts: { ...previous.timeouts } }, errors };
  }
  const data = raw as Record<string, unknown>;
  const read = (key: string): string | undefined | typeof NOT_A_STRING => {
    const v = Object.hasOwn(data, key) ? data[key] : undefined;
    if (v === undefined || typeof v === 'string') return v;
    errors.push({ object, reason: `${key}: ${JSON.stringify(v)} is not a string; keeping the previous value` });
    return NOT_A_STRING;
  };
  for (const key of Object.keys(data)) {
    if (!['scheduler', 'schedulerFlags', ...Object.keys(TIMEOUT_KEYS)].includes(key)) {
      errors.push({ object, reason: `unknown key "${key}" ignored` });
    }
  }
  let scheduler = defaults.scheduler;
  let schedulerFlags = defaults.schedulerFlags;
  const text = read('scheduler');
  const wanted = typeof text === 'string' ? text.trim() : text;
  if (wanted === NOT_A_STRING || (wanted !== undefined && !isScheduler(wanted))) {
    if (wanted !== NOT_A_STRING) {
      errors.push({ object, reason: `unknown scheduler "${wanted}" (known: ${SCHEDULERS.join(' ')}); keeping "${previous.scheduler}"` });
    }
    [scheduler, schedulerFlags] = [previous.scheduler, previous.schedulerFlags];
  } else {
    if (wanted !== undefined) [scheduler, schedulerFlags] = [wanted, []];
    const flagsText = read('schedulerFlags');
    if (flagsText === NOT_A_STRING) [scheduler, schedulerFlags] = [previous.scheduler, previous.schedulerFlags];
    else if (flagsText !== undefined) {
      try {
        const flags = splitList(flagsText);
        schedulerFlagBits(scheduler, flags);
        schedulerFlags = flags;
      } catch (err) {
        errors.push({ object, reason: `schedulerFlags: ${(err as Error).message}; keeping the previous scheduler settings` });
        [scheduler, schedulerFlags] = [previous.scheduler, previous.schedulerFlags];
      }
    }
  }
  const timeouts = { ...defaults.timeouts };
  for (const [key, field] of Object.entries(TIMEOUT_KEYS)) {
    const value = read(key);
    if (value === undefined) continue;
    if (value === NOT_A_STRING) {
      timeouts[field] = previous.timeouts[field];
      continue;
    }
    try {
      timeouts[field] = parseSeconds(value);
    } catch (err) {
      errors.push({ object, reason: `${key}: ${(err as Error).message}` });
      timeouts[field] = previous.timeouts[field];
    }
  }
  return { config: { scheduler, schedulerFlags: [...schedulerFlags], timeouts }, errors };
}
