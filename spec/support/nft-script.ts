// Reading kipvs's rendered nft script back (lib/nft/render.ts): the elements of one set, as rendered.

/** Every set the table has, as renderRuleset names them. */
export const NFT_SETS = [4, 6].flatMap((f) => ['services', 'masq', 'clusterips', 'firewall', 'firewall_allow', 'bound', 'hairpin', 'cluster_cidrs'].map((s) => `${s}${f}`));

/** The elements of one set, as rendered. */
export function elements(script: string, set: string): string[] {
  const m = new RegExp(`\\tset ${set} \\{\\n(?:.*\\n)*?(?:\\t\\telements = \\{\\n((?:\\t\\t\\t.*\\n)*)\\t\\t\\}\\n)?\\t\\}`).exec(script);
  if (!m) throw new Error(`no set ${set} in\n${script}`);
  return (m[1] ?? '').split('\n').map((l) => l.trim().replace(/,$/, '')).filter(Boolean);
}
