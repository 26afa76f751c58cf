// Host side of the real-kernel tests: reads what run-scenarios.js observed inside the VM (or host
// netns) and hands each test its scenario's value; a scenario that threw fails its tests with its stack.

import { readFileSync } from 'node:fs';

const FILE = process.env.KIPVS_KERNEL_RESULTS ?? 'build/kernel-results/results.json';

interface Results {
  kernel: string;
  scenarios: Record<string, { ok: boolean; value?: unknown; error?: string }>;
}

let cache: Results | undefined;

export function kernelResults(): Results {
  cache ??= JSON.parse(readFileSync(FILE, 'utf8')) as Results;
  return cache;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function scenario(name: string): any {
  const r = kernelResults().scenarios[name];
  if (!r) throw new Error(`scenario "${name}" did not run (results in ${FILE}; run make test-kernel)`);
  if (!r.ok) throw new Error(`scenario "${name}" failed in the kernel:\n${r.error}`);
  return r.value;
}
