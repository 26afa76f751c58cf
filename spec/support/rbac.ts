// RBAC as the API server evaluates it, for checking manifests against what a client really asks:
// a request (method, path, query) becomes an access (verb, API group, resource, namespace, name) the
// way the server's RequestInfo resolver does it, and the roles bound to a ServiceAccount become grants.
// `uncovered` lists accesses no grant allows; `unjustified` lists grants no need explains.

import type { KubeObject } from './k8s-schema.js';

export interface Access {
  verb: string;
  /** '' for the core group. */
  group: string;
  /** Resource, or resource/subresource. */
  resource: string;
  /** Undefined for cluster-scoped resources and all-namespaces lists. */
  namespace?: string;
  /** From the path, or for list/watch from fieldSelector metadata.name=NAME (which RBAC honours). */
  name?: string;
}

export interface RequestLike { method: string; path: string; query: Record<string, string>; watch?: boolean }

const VERBS: Record<string, string> = { POST: 'create', PUT: 'update', PATCH: 'patch' };

/** The access a resource request amounts to; undefined for non-resource paths (/api, /version...). */
export function accessOf(r: RequestLike): Access | undefined {
  const parts = r.path.split('/').filter(Boolean);
  let group: string;
  let rest: string[];
  if (parts[0] === 'api' && parts.length >= 3) [group, rest] = ['', parts.slice(2)];
  else if (parts[0] === 'apis' && parts.length >= 4) [group, rest] = [parts[1], parts.slice(3)];
  else return undefined;
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) [namespace, rest] = [rest[1], rest.slice(2)];
  const [res, pathName, sub] = rest;
  const resource = sub ? `${res}/${sub}` : res;
  const watch = r.watch ?? (r.query.watch === 'true' || r.query.watch === '1');
  let verb: string;
  if (r.method === 'GET') verb = pathName !== undefined ? 'get' : watch ? 'watch' : 'list';
  else if (r.method === 'DELETE') verb = pathName !== undefined ? 'delete' : 'deletecollection';
  else verb = VERBS[r.method] ?? r.method.toLowerCase();
  let name = pathName;
  if (name === undefined && (verb === 'list' || verb === 'watch')) {
    for (const term of (r.query.fieldSelector ?? '').split(',')) {
      const m = /^metadata\.name==?(.+)$/.exec(term.trim());
      if (m) name = m[1];
    }
  }
  return { verb, group, resource, ...(namespace !== undefined ? { namespace } : {}), ...(name !== undefined ? { name } : {}) };
}

export function describeAccess(a: Access): string {
  const where = a.namespace !== undefined ? ` in namespace ${a.namespace}` : ' cluster-wide';
  return `${a.verb} ${a.group || 'core'}/${a.resource}${where}${a.name !== undefined ? ` named ${a.name}` : ''}`;
}

export interface ServiceAccountRef { name: string; namespace: string }

/** One (verb, group, resource) a role grants, where: 'cluster' (a ClusterRoleBinding) or a namespace. */
export interface Grant {
  scope: string;
  verb: string;
  group: string;
  resource: string;
  /** resourceNames, when the rule restricts them. */
  names?: string[];
  /** Kind/name of the role and binding it comes from, for messages. */
  from: string;
}

export function describeGrant(g: Grant): string {
  const where = g.scope === 'cluster' ? 'cluster-wide' : `in namespace ${g.scope}`;
  return `${g.verb} ${g.group || 'core'}/${g.resource} ${where}${g.names ? ` named ${g.names.join(',')}` : ''} (${g.from})`;
}

interface Rule { apiGroups?: string[]; resources?: string[]; verbs?: string[]; resourceNames?: string[]; nonResourceURLs?: string[] }
interface Binding extends KubeObject {
  roleRef?: { kind?: string; name?: string; apiGroup?: string };
  subjects?: Array<{ kind?: string; name?: string; namespace?: string; apiGroup?: string }>;
}

/**
 * Every grant the ServiceAccount gets from these objects, and what cannot be expressed as a grant:
 * bindings to roles not among the objects, nonResourceURLs, aggregation rules.
 */
export function grantsFor(objects: KubeObject[], sa: ServiceAccountRef): { grants: Grant[]; problems: string[] } {
  const grants: Grant[] = [];
  const problems: string[] = [];
  const rbac = objects.filter((o) => o.apiVersion === 'rbac.authorization.k8s.io/v1');
  const role = (kind: string, name: string, namespace?: string) =>
    rbac.find((o) => o.kind === kind && o.metadata?.name === name && (kind === 'ClusterRole' || o.metadata?.namespace === namespace));
  for (const b of rbac as Binding[]) {
    if (b.kind !== 'RoleBinding' && b.kind !== 'ClusterRoleBinding') continue;
    const mine = (b.subjects ?? []).some((s) => s.kind === 'ServiceAccount' && s.name === sa.name && s.namespace === sa.namespace);
    if (!mine) continue;
    const scope = b.kind === 'ClusterRoleBinding' ? 'cluster' : b.metadata?.namespace ?? 'default';
    const ref = b.roleRef ?? {};
    const r = role(String(ref.kind), String(ref.name), scope);
    const from = `${b.kind} ${b.metadata?.name} -> ${ref.kind} ${ref.name}`;
    if (!r || ref.apiGroup !== 'rbac.authorization.k8s.io' || (b.kind === 'ClusterRoleBinding' && ref.kind !== 'ClusterRole')) {
      problems.push(`${from}: the role is not among the manifests (or the reference is invalid)`);
      continue;
    }
    if (r.aggregationRule) problems.push(`${from}: aggregationRule pulls in rules from other roles`);
    for (const rule of (r.rules ?? []) as Rule[]) {
      if (rule.nonResourceURLs?.length) problems.push(`${from}: nonResourceURLs ${rule.nonResourceURLs.join(',')}`);
      const names = rule.resourceNames?.length ? [...rule.resourceNames] : undefined;
      for (const group of rule.apiGroups ?? []) {
        for (const resource of rule.resources ?? []) {
          for (const verb of rule.verbs ?? []) grants.push({ scope, verb, group, resource, ...(names ? { names } : {}), from });
        }
      }
    }
  }
  return { grants, problems };
}

const matches = (granted: string, wanted: string) => granted === '*' || granted === wanted;

/** RBAC's own rule: does any grant allow the access? */
export function allowed(grants: Grant[], a: Access): boolean {
  return grants.some((g) =>
    matches(g.verb, a.verb) && matches(g.group, a.group) && matches(g.resource, a.resource)
    && (g.scope === 'cluster' || g.scope === a.namespace)
    && (!g.names || (a.name !== undefined && a.verb !== 'create' && a.verb !== 'deletecollection' && g.names.includes(a.name))));
}

/** The accesses no grant allows, described. */
export function uncovered(grants: Grant[], accesses: Access[]): string[] {
  return accesses.filter((a) => !allowed(grants, a)).map(describeAccess);
}

/**
 * What a grant may be justified by: a verb on a resource, where the client used it (a namespace, or
 * 'cluster' when it was used cluster-wide or across all namespaces), and the one name it used, when
 * the name is fixed by configuration (then the grant must name it; a per-node name cannot be).
 */
export interface Need { verb: string; group: string; resource: string; scope: string; name?: string; why: string }

/**
 * The grants no need explains, described: wildcards, other verbs, resources or groups, a wider scope
 * than the use, a missing resourceNames restriction. `get` is explained by a `list` of the same
 * resource, scope and name: it reveals nothing the list does not.
 */
export function unjustified(grants: Grant[], needs: Need[]): string[] {
  return grants.filter((g) => !needs.some((n) =>
    (n.verb === g.verb || (g.verb === 'get' && n.verb === 'list'))
    && n.group === g.group && n.resource === g.resource
    && (n.scope === 'cluster' || n.scope === g.scope)
    && (n.name === undefined || (g.names !== undefined && g.names.every((x) => x === n.name)))))
    .map(describeGrant);
}
