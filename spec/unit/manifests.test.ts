// The deployment manifests (manifests/) and the standalone examples (manifests/examples/):
// (a) every object is valid against the Kubernetes schema shipped offline by client-node, read as
//     kubectl reads YAML; the validator itself is shown to catch each kind of mistake;
// (b) the RBAC allows exactly what the real agent asks the API server for: the agent is started with
//     the DaemonSet's own flags against the test API server, its request log is mapped to RBAC
//     accesses, and the roles must allow each one and grant nothing else (plus the declared Events);
// (c) the DaemonSet's security posture, probe and flags (parsed by the agent's own parser);
// and the examples program the kernel as `make demo` expects (the agent on a directory, fake kernel).

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1ConfigMap, V1Container, V1DaemonSet, V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import ipaddr from 'ipaddr.js';
import { startAgent } from '../../lib/agent.js';
import { agentOptions } from '../../lib/cli.js';
import { FakeKernel } from '../../lib/kernel/fake.js';
import { applyConfigMap, DEFAULT_CONFIG, isScheduler } from '../../lib/proxy/config.js';
import { ANNOTATION_SCHEDULER } from '../../lib/proxy/desired.js';
import { SERVICE_NAME_LABEL } from '../../lib/sources/types.js';
import { TestApiServer, type WireObject } from '../support/apiserver.js';
import { kindOf, loadManifests, parseManifests, validateObject, type KubeObject } from '../support/k8s-schema.js';
import { endpointSlice, node, service, waitFor } from '../support/kube-fixtures.js';
import { captureLogger } from '../support/logger.js';
import { accessOf, describeAccess, grantsFor, uncovered, unjustified, type Access, type Need } from '../support/rbac.js';

const { docs, problems: yamlProblems, files } = loadManifests('manifests');
const isExample = (file: string) => file.startsWith(join('manifests', 'examples'));
const deployment = docs.filter((d) => !isExample(d.file)).map((d) => d.object);
const examples = docs.filter((d) => isExample(d.file)).map((d) => d.object);

const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o));
const named = (objs: KubeObject[], kind: string, name: string) => objs.filter((o) => o.kind === kind && o.metadata?.name === name);
function only<T = KubeObject>(objs: KubeObject[], kind: string, name = 'kipvs'): T {
  const found = named(objs, kind, name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name} in the manifests, found ${found.length}`);
  return found[0] as T;
}

/** Sets (or with `undefined` deletes) a value at a dotted path; numeric parts index arrays. */
function edit(obj: unknown, path: string, value: unknown): void {
  const parts = path.split('.');
  let o = obj as Record<string, unknown>;
  for (const p of parts.slice(0, -1)) o = o[p] as Record<string, unknown>;
  const last = parts[parts.length - 1];
  if (value === undefined) delete o[last];
  else o[last] = value;
}

const SA = { name: 'kipvs', namespace: 'kube-system' };
/** The node the DaemonSet's $(NODE_NAME) stands for in these tests; RBAC must not depend on it. */
const NODE = 'node-a';
const OTHER_NODE = 'node-b';

// ---- (a) schema ------------------------------------------------------------------------------

describe('(a) every manifest is valid Kubernetes', () => {
  test('manifests/ holds the deployment and the examples, every file read as kubectl reads YAML', () => {
    expect(files).toEqual(expect.arrayContaining([join('manifests', 'kipvs.yaml'), join('manifests', 'examples', 'web.yaml')]));
    expect(yamlProblems).toEqual([]);
    expect(deployment.map((o) => o.kind).sort()).toEqual(
      ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'Role', 'RoleBinding', 'ServiceAccount']);
    expect(examples.length).toBeGreaterThanOrEqual(9);
  });

  test.each(docs.map((d) => [d.where, d.object] as const))('%s: schema', (_where, object) => {
    expect(validateObject(object)).toEqual([]);
  });

  test('namespaced objects name their namespace, cluster-scoped ones do not; no two objects share a name', () => {
    const problems: string[] = [];
    const seen = new Set<string>();
    for (const d of docs) {
      const k = kindOf(d.object);
      const ns = d.object.metadata?.namespace;
      if (k?.namespaced && !ns) problems.push(`${d.where}: no metadata.namespace (kubectl apply would use the current namespace)`);
      if (k && !k.namespaced && ns !== undefined) problems.push(`${d.where}: metadata.namespace on a cluster-scoped kind`);
      // The examples are a world of their own (the standalone mode), with their own ConfigMap.
      const id = `${isExample(d.file)} ${d.object.apiVersion}/${d.object.kind} ${ns ?? ''}/${d.object.metadata?.name}`;
      if (seen.has(id)) problems.push(`${d.where}: defined twice`);
      seen.add(id);
    }
    expect(problems).toEqual([]);
  });

  describe('the validator catches each kind of mistake', () => {
    const ds = only(deployment, 'DaemonSet');
    const C = 'spec.template.spec.containers.0';
    const broken = (path: string, value: unknown, o: KubeObject = ds) => {
      const copy = clone(o);
      edit(copy, path, value);
      return validateObject(copy);
    };

    test('the real DaemonSet passes, so each failure below is the edit alone', () => {
      expect(validateObject(clone(ds))).toEqual([]);
    });

    test('unknown fields, with a suggestion for a near miss', () => {
      expect(broken(`${C}.imagePullPolicyy`, 'Always')).toEqual([
        `${C.replace('.0', '[0]')}.imagePullPolicyy: unknown field in V1Container (did you mean "imagePullPolicy"?)`]);
      expect(broken('spec.template.spec.hostnetwork', true)).toEqual([
        'spec.template.spec.hostnetwork: unknown field in V1PodSpec (did you mean "hostNetwork"?)']);
      // A field at the wrong level is the same mistake.
      expect(broken('spec.hostNetwork', true)).toEqual(['spec.hostNetwork: unknown field in V1DaemonSetSpec']);
    });

    test('wrong JSON types: string, number, integer, boolean, array, object, map values', () => {
      expect(broken('spec.template.spec.hostNetwork', 'true')).toEqual(['spec.template.spec.hostNetwork: expected a boolean, got string "true"']);
      expect(broken(`${C}.ports.0.containerPort`, '10256')).toEqual(['spec.template.spec.containers[0].ports[0].containerPort: expected a number, got string "10256"']);
      expect(broken(`${C}.ports.0.containerPort`, 10256.5)).toEqual(['spec.template.spec.containers[0].ports[0].containerPort: expected an integer, got 10256.5']);
      expect(broken(`${C}.args`, '--v=2')).toEqual(['spec.template.spec.containers[0].args: expected an array of string, got string "--v=2"']);
      expect(broken(`${C}.securityContext`, ['NET_ADMIN'])).toEqual(['spec.template.spec.containers[0].securityContext: expected an object (V1SecurityContext), got an array']);
      expect(broken('data.tcpTimeout', 0, only(deployment, 'ConfigMap'))).toEqual(['data["tcpTimeout"]: expected a string, got number 0']);
      expect(broken('spec.template.metadata.labels.tier', 1)).toEqual(['spec.template.metadata.labels["tier"]: expected a string, got number 1']);
    });

    test('int-or-string fields take both, and nothing else; quantities take numbers', () => {
      expect(broken(`${C}.livenessProbe.httpGet.port`, 10256)).toEqual([]);
      expect(broken(`${C}.livenessProbe.httpGet.port`, 'healthz')).toEqual([]);
      expect(broken(`${C}.livenessProbe.httpGet.port`, true)).toEqual(['spec.template.spec.containers[0].livenessProbe.httpGet.port: expected an integer or a string, got boolean true']);
      expect(broken('spec.updateStrategy.rollingUpdate.maxUnavailable', '10%')).toEqual([]);
      expect(broken(`${C}.resources.requests.cpu`, 1)).toEqual([]);
      expect(broken(`${C}.resources.requests.cpu`, false)).toEqual(['spec.template.spec.containers[0].resources.requests["cpu"]: expected a quantity (string or number), got boolean false']);
    });

    test('required fields: from the models, plus metadata.name and a container image', () => {
      expect(broken(`${C}.name`, undefined)).toEqual(['spec.template.spec.containers[0].name: required field of V1Container is missing']);
      expect(broken(`${C}.image`, undefined)).toEqual(['spec.template.spec.containers[0].image: required field of V1Container is missing']);
      expect(broken('spec.selector', undefined)).toEqual(['spec.selector: required field of V1DaemonSetSpec is missing']);
      expect(broken('metadata.name', undefined)).toEqual(['metadata.name: required (the API server refuses an object without a name)']);
      expect(broken('rules.0.verbs', undefined, only(deployment, 'ClusterRole'))).toEqual(['rules[0].verbs: required field of V1PolicyRule is missing']);
      expect(broken('roleRef.apiGroup', undefined, only(deployment, 'RoleBinding'))).toEqual(['roleRef.apiGroup: required field of V1RoleRef is missing']);
      const slice = examples.find((o) => o.kind === 'EndpointSlice')!;
      expect(broken('addressType', undefined, slice)).toEqual(['addressType: required field of V1EndpointSlice is missing']);
      expect(broken('endpoints.0.addresses', undefined, slice)).toEqual(['endpoints[0].addresses: required field of V1Endpoint is missing']);
    });

    test('null (an empty YAML value) and unknown kinds', () => {
      expect(broken(`${C}.resources`, null)).toEqual(['spec.template.spec.containers[0].resources: is null (an empty value in YAML?); expected V1ResourceRequirements']);
      expect(broken('apiVersion', 'extensions/v1beta1')[0]).toMatch(/^\(root\): no schema for apiVersion "extensions\/v1beta1" kind "DaemonSet"/);
    });

    test('YAML 1.1 scalars are reported and read as kubectl reads them', () => {
      const text = 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: ns}\ndata:\n  enabled: yes\n  mode: 0755\n  quoted: "no"\n';
      const { docs: parsed, problems } = parseManifests(text, 'x.yaml');
      expect(problems).toEqual([
        'x.yaml#0 ConfigMap ns/x: data.enabled: plain yes is true to kubectl (YAML 1.1) but not to YAML 1.2 readers: quote it or write true',
        'x.yaml#0 ConfigMap ns/x: data.mode: plain 0755 is 493 to kubectl (YAML 1.1) but not to YAML 1.2 readers: quote it or write 493',
      ]);
      expect(validateObject(parsed[0].object)).toEqual([
        'data["enabled"]: expected a string, got boolean true',
        'data["mode"]: expected a string, got number 493',
      ]);
      expect(parseManifests('a: [1\n', 'bad.yaml').problems[0]).toMatch(/^bad\.yaml: /);
    });
  });
});

// ---- (b) RBAC ----------------------------------------------------------------------------------

const daemonSet = only<V1DaemonSet>(deployment, 'DaemonSet');
const container = daemonSet.spec!.template.spec!.containers[0];

/** Kubernetes' $(VAR) expansion of args from the container's env ($$ escapes); unknown stays as is. */
function expandArgs(c: V1Container, nodeName: string): string[] {
  const env = new Map<string, string>();
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env.set(e.name, e.value);
    else if (e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName') env.set(e.name, nodeName);
  }
  return (c.args ?? []).map((a) => a.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v?: string) => (v === undefined ? '$' : env.get(v) ?? m)));
}

/** The DaemonSet's flags as the agent parses them (`kipvs agent ...`). */
function daemonSetOptions(ds: V1DaemonSet, nodeName = NODE) {
  const c = ds.spec!.template.spec!.containers[0];
  const [cmd, ...flags] = expandArgs(c, nodeName);
  if (cmd !== 'agent') throw new Error(`the first argument must be the "agent" command, not ${cmd}`);
  return agentOptions(flags);
}

/** Declared, not yet observed: the agent reports a bad Service with an events.k8s.io/v1 Event in the
 *  Service's namespace (create; patch for a repeated event's series), any namespace. */
const EVENT_NEEDS: Need[] = ['create', 'patch'].map((verb) => ({
  verb, group: 'events.k8s.io', resource: 'events', scope: 'cluster', why: 'Events on Services',
}));
const EVENT_ACCESSES: Access[] = ['default', 'team-a'].flatMap((namespace) =>
  ['create', 'patch'].map((verb) => ({ verb, group: 'events.k8s.io', resource: 'events', namespace })));

/** Everything wrong with `objects`' RBAC for the ServiceAccount, given what the agent asked for. */
function rbacProblems(objects: KubeObject[], accesses: Access[]): string[] {
  const { grants, problems } = grantsFor(objects, SA);
  // The Node is asked for by this node's name: the same grant must serve every node.
  const otherNode = accesses.filter((a) => a.name === NODE).map((a) => ({ ...a, name: OTHER_NODE }));
  const needs: Need[] = [
    ...accesses.map((a) => ({
      verb: a.verb, group: a.group, resource: a.resource, scope: a.namespace ?? 'cluster',
      ...(a.name !== undefined && a.name !== NODE ? { name: a.name } : {}), why: describeAccess(a),
    })),
    ...EVENT_NEEDS,
  ];
  return [
    ...problems,
    ...uncovered(grants, [...accesses, ...otherNode, ...EVENT_ACCESSES]).map((d) => `not allowed: ${d}`),
    ...unjustified(grants, needs).map((d) => `not needed: ${d}`),
  ];
}

describe('(b) RBAC covers exactly what the agent calls', () => {
  let accesses: Access[] = [];
  let agentErrors: string[] = [];

  beforeAll(async () => {
    const server = await new TestApiServer({ bookmarkIntervalMs: 0 }).start();
    const dir = mkdtempSync(join(tmpdir(), 'kipvs-manifests-'));
    const log = captureLogger();
    const kernel = new FakeKernel();
    let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
    try {
      const cm = only<WireObject>(deployment, 'ConfigMap');
      server.create('configmaps', cm);
      server.create('nodes', node(NODE));
      server.create('nodes', node(OTHER_NODE));
      server.create('services', service('web'));
      server.create('endpointslices', endpointSlice('web-1', 'web', ['10.244.1.10']));
      // A Service the agent refuses: where it would emit an Event.
      const bad = service('bad', 'team-a', '10.96.0.99');
      bad.metadata!.annotations = { [ANNOTATION_SCHEDULER]: 'no-such-scheduler' };
      server.create('services', bad);
      const kubeconfig = join(dir, 'kubeconfig');
      server.writeKubeconfig(kubeconfig);
      // The DaemonSet's own flags; only the API server address differs from in-cluster.
      const opts = daemonSetOptions(daemonSet);
      agent = await startAgent({ ...opts, kubeconfig, logger: log, kernel });
      await agent.ready;
      // Every collection listed is then watched; wait for all the watches to be open.
      const collections = () => new Set(server.requests.filter((r) => r.method === 'GET' && !r.watch)
        .map((r) => `${r.path}?${r.query.fieldSelector ?? ''}`)).size;
      await waitFor(() => server.openWatches > 0 && server.openWatches === collections(), 'a watch on every listed collection');
      // A change after the start, so steady-state calls show too.
      server.create('endpointslices', endpointSlice('web-2', 'web', ['10.244.2.10']));
      await waitFor(() => kernel.table().services.some((s) => s.destinations.length === 2), 'the second endpoint programmed');
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      await agent?.stop();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
    const seen = new Map<string, Access>();
    for (const r of server.requests) {
      const a = accessOf(r);
      if (a) seen.set(describeAccess(a), a);
    }
    accesses = [...seen.values()];
    agentErrors = log.errors();
  });

  test('the agent ran against the API server and made the calls its sources are built on', () => {
    expect(agentErrors).toEqual([expect.stringContaining('Service team-a/bad')]);
    expect(accesses.map(describeAccess)).toEqual(expect.arrayContaining([
      'list core/services cluster-wide', 'watch core/services cluster-wide',
      'list discovery.k8s.io/endpointslices cluster-wide', 'watch discovery.k8s.io/endpointslices cluster-wide',
      `list core/nodes cluster-wide named ${NODE}`, `watch core/nodes cluster-wide named ${NODE}`,
      'list core/configmaps in namespace kube-system named kipvs', 'watch core/configmaps in namespace kube-system named kipvs',
    ]));
  });

  test('the ServiceAccount is allowed every call, on any node, and is granted nothing else', () => {
    expect(rbacProblems(deployment, accesses)).toEqual([]);
  });

  test('no wildcard, no Secrets, no non-resource URL, no write but Events', () => {
    const { grants } = grantsFor(deployment, SA);
    expect(grants.length).toBeGreaterThan(0);
    expect(grants.filter((g) => [g.verb, g.group, g.resource, ...(g.names ?? [])].includes('*'))).toEqual([]);
    expect(grants.filter((g) => g.resource === 'secrets')).toEqual([]);
    expect(grants.filter((g) => !['get', 'list', 'watch'].includes(g.verb)).map((g) => `${g.verb} ${g.group}/${g.resource}`).sort())
      .toEqual(['create events.k8s.io/events', 'patch events.k8s.io/events']);
  });

  test('every binding in the manifests binds this ServiceAccount only', () => {
    const bindings = deployment.filter((o) => /Binding$/.test(String(o.kind))) as Array<KubeObject & { subjects?: unknown[] }>;
    expect(bindings.map((b) => b.subjects)).toEqual(bindings.map(() => [{ kind: 'ServiceAccount', ...SA }]));
  });

  describe('the check fails on broken RBAC', () => {
    const mutated = (change: (objs: KubeObject[]) => void) => {
      const objs = clone(deployment);
      change(objs);
      return rbacProblems(objs, accesses);
    };
    type Rule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };
    const rules = (objs: KubeObject[], kind: string) => only<{ rules: Rule[] }>(objs, kind).rules;

    test('a verb the agent uses is missing', () => {
      expect(mutated((o) => { rules(o, 'ClusterRole')[1].verbs = ['get', 'list']; }))
        .toEqual(['not allowed: watch discovery.k8s.io/endpointslices cluster-wide']);
    });

    test('Secrets, a wildcard, or a write are granted', () => {
      expect(mutated((o) => { rules(o, 'ClusterRole').push({ apiGroups: [''], resources: ['secrets'], verbs: ['get'] }); }))
        .toEqual(['not needed: get core/secrets cluster-wide (ClusterRoleBinding kipvs -> ClusterRole kipvs)']);
      expect(mutated((o) => { rules(o, 'ClusterRole')[0].verbs = ['*']; }))
        .toEqual(['not needed: * core/services cluster-wide (ClusterRoleBinding kipvs -> ClusterRole kipvs)',
          'not needed: * core/nodes cluster-wide (ClusterRoleBinding kipvs -> ClusterRole kipvs)']);
      expect(mutated((o) => { rules(o, 'ClusterRole')[0].verbs.push('update'); }))
        .toEqual(['not needed: update core/services cluster-wide (ClusterRoleBinding kipvs -> ClusterRole kipvs)',
          'not needed: update core/nodes cluster-wide (ClusterRoleBinding kipvs -> ClusterRole kipvs)']);
    });

    test('the ConfigMap rule loses its resourceNames, or moves to the ClusterRole', () => {
      expect(mutated((o) => { delete rules(o, 'Role')[0].resourceNames; })).toEqual(
        ['get', 'list', 'watch'].map((v) => `not needed: ${v} core/configmaps in namespace kube-system (RoleBinding kipvs -> Role kipvs)`));
      expect(mutated((o) => { rules(o, 'ClusterRole').push(rules(o, 'Role')[0]); }).length).toBe(3);
    });

    test('the Role sits in another namespace than the --config-map', () => {
      expect(mutated((o) => {
        only(o, 'Role').metadata!.namespace = 'default';
        only(o, 'RoleBinding').metadata!.namespace = 'default';
      })).toEqual([
        'not allowed: list core/configmaps in namespace kube-system named kipvs',
        'not allowed: watch core/configmaps in namespace kube-system named kipvs',
        ...['get', 'list', 'watch'].map((v) => `not needed: ${v} core/configmaps in namespace default named kipvs (RoleBinding kipvs -> Role kipvs)`),
      ]);
    });

    test('nodes pinned to one node name', () => {
      expect(mutated((o) => {
        rules(o, 'ClusterRole')[0].resources = ['services'];
        rules(o, 'ClusterRole').push({ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'], resourceNames: [NODE] });
      })).toEqual([`not allowed: list core/nodes cluster-wide named ${OTHER_NODE}`, `not allowed: watch core/nodes cluster-wide named ${OTHER_NODE}`]);
    });

    test('Events granted in the core group instead of events.k8s.io', () => {
      const problems = mutated((o) => { rules(o, 'ClusterRole')[2].apiGroups = ['']; });
      expect(problems).toContain('not allowed: create events.k8s.io/events in namespace default');
      expect(problems).toContain('not needed: create core/events cluster-wide (ClusterRoleBinding kipvs -> ClusterRole kipvs)');
    });

    test('a binding names another ServiceAccount, or a role that is not there', () => {
      expect(mutated((o) => { (only(o, 'ClusterRoleBinding') as { subjects: Array<{ name: string }> }).subjects[0].name = 'default'; }))
        .toContain('not allowed: list core/services cluster-wide');
      expect(mutated((o) => { (only(o, 'RoleBinding') as { roleRef: { name: string } }).roleRef.name = 'kipvs-reader'; }))
        .toContain('RoleBinding kipvs -> Role kipvs-reader: the role is not among the manifests (or the reference is invalid)');
    });
  });
});

// ---- (c) DaemonSet ---------------------------------------------------------------------------

/** Everything wrong with the DaemonSet's posture, probe and flags. */
function daemonSetProblems(ds: V1DaemonSet, objects: KubeObject[]): string[] {
  const out: string[] = [];
  const check = (ok: boolean, msg: string) => void (ok || out.push(msg));
  const pod = ds.spec?.template.spec;
  if (!pod) return ['no pod template'];
  check(pod.hostNetwork === true, 'hostNetwork must be true (IPVS and kube-ipvs0 are the node\'s)');
  check(pod.dnsPolicy === 'ClusterFirstWithHostNet', 'dnsPolicy must be ClusterFirstWithHostNet');
  check(pod.priorityClassName === 'system-node-critical', 'priorityClassName must be system-node-critical');
  check(!pod.hostPID && !pod.hostIPC, 'no hostPID / hostIPC');
  check(JSON.stringify(pod.tolerations) === JSON.stringify([{ operator: 'Exists' }]), 'tolerations must be one {operator: Exists} (every taint)');
  check(ds.spec?.updateStrategy?.type === 'RollingUpdate' && ds.spec.updateStrategy.rollingUpdate?.maxUnavailable === 1, 'RollingUpdate with maxUnavailable 1');
  check(named(objects, 'ServiceAccount', pod.serviceAccountName ?? '').some((sa) => sa.metadata?.namespace === ds.metadata?.namespace),
    `serviceAccountName ${pod.serviceAccountName} is not a ServiceAccount of the manifests in ${ds.metadata?.namespace}`);
  check(pod.automountServiceAccountToken !== false, 'the agent needs its ServiceAccount token');
  // Privilege only where a writable /proc/sys needs it: one init container that runs `agent --init-only`
  // (the kernel settings) and exits. Every long-running container holds NET_ADMIN alone.
  for (const c of pod.initContainers ?? []) {
    const w = `init container ${c.name}`;
    check(c.args?.[0] === 'agent' && c.args.includes('--init-only'), `${w}: must run agent --init-only`);
    check(c.securityContext?.privileged === true && c.securityContext.readOnlyRootFilesystem === true, `${w}: privileged (for /proc/sys) with a read-only root`);
  }
  for (const c of pod.containers) {
    const sc = c.securityContext ?? {};
    const w = `container ${c.name}`;
    check(sc.privileged === false, `${w}: privileged must be false`);
    check(sc.allowPrivilegeEscalation === false, `${w}: allowPrivilegeEscalation must be false`);
    check(sc.readOnlyRootFilesystem === true, `${w}: readOnlyRootFilesystem must be true`);
    check(JSON.stringify(sc.capabilities?.add) === '["NET_ADMIN"]', `${w}: capabilities.add must be exactly [NET_ADMIN], not ${JSON.stringify(sc.capabilities?.add)}`);
    check(JSON.stringify(sc.capabilities?.drop) === '["ALL"]', `${w}: capabilities.drop must be [ALL]`);
    check(!!c.resources?.requests?.cpu && !!c.resources.requests.memory, `${w}: cpu and memory requests`);
    for (const m of c.volumeMounts ?? []) {
      const v = pod.volumes?.find((x) => x.name === m.name);
      if (v?.hostPath) check(m.readOnly === true, `${w}: hostPath ${v.hostPath.path} must be mounted read-only`);
    }
  }
  check(pod.volumes?.every((v) => !v.hostPath || v.hostPath.path === '/lib/modules') ?? true, 'no hostPath but /lib/modules');
  const c = pod.containers.find((x) => x.name === 'kipvs');
  if (!c) return [...out, 'no container "kipvs"'];
  const http = c.livenessProbe?.httpGet;
  const port = typeof http?.port === 'string' ? c.ports?.find((p) => p.name === http.port)?.containerPort : http?.port;
  check(http?.path === '/healthz' && port === 10256 && (http.scheme ?? 'HTTP') === 'HTTP', 'liveness probe must be HTTP GET /healthz on 10256 (kube-proxy\'s healthz port)');
  const nodeEnv = c.env?.find((e) => e.name === 'NODE_NAME');
  check(nodeEnv?.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName', 'env NODE_NAME must come from fieldRef spec.nodeName');
  const args = expandArgs(c, NODE);
  check(!args.some((a) => a.includes('$(')), `unresolved $(VAR) in args: ${args.filter((a) => a.includes('$(')).join(' ')}`);
  check(c.args?.includes('--hostname-override=$(NODE_NAME)') ?? false, 'args must pass --hostname-override=$(NODE_NAME)');
  let opts: ReturnType<typeof agentOptions> | undefined;
  try {
    opts = daemonSetOptions(ds);
  } catch (err) {
    out.push(`args: ${(err as Error).message}`);
  }
  if (opts) {
    check(opts.source === 'kube', `--source must be kube, not ${opts.source}`);
    check(opts.nodeName === NODE, '--hostname-override must be the node name');
    check(opts.netns === undefined, '--netns would need SYS_ADMIN; a DaemonSet programs the host network namespace');
    check(Object.keys(opts.overrides).length === 0, `flags override the ConfigMap: ${JSON.stringify(opts.overrides)}`);
    const [ns, name] = opts.configMap.split('/');
    check(named(objects, 'ConfigMap', name).some((cm) => cm.metadata?.namespace === ns), `--config-map ${opts.configMap} is not among the manifests`);
  }
  return out;
}

describe('(c) the DaemonSet', () => {
  test('posture, probe, tolerations and flags', () => {
    expect(daemonSetProblems(daemonSet, deployment)).toEqual([]);
  });

  test('the image is this release (package.json version)', () => {
    const version = JSON.parse(readFileSync('package.json', 'utf8')).version;
    expect(container.image).toBe(`ghcr.io/kipvs/kipvs:${version}`);
  });

  test('the ConfigMap is one the agent reads without complaint', () => {
    for (const cm of [only<V1ConfigMap>(deployment, 'ConfigMap'), only<V1ConfigMap>(examples, 'ConfigMap')]) {
      const { config, errors } = applyConfigMap(DEFAULT_CONFIG, cm);
      expect(errors).toEqual([]);
      expect(config).toEqual(DEFAULT_CONFIG);
    }
  });

  describe('the check fails on a weakened DaemonSet', () => {
    const C = 'spec.template.spec.containers.0';
    const problems = (path: string, value: unknown) => {
      const ds = clone(daemonSet);
      edit(ds, path, value);
      return daemonSetProblems(ds, deployment);
    };
    test.each([
      [`${C}.securityContext.privileged`, true, 'container kipvs: privileged must be false'],
      [`${C}.securityContext.allowPrivilegeEscalation`, undefined, 'container kipvs: allowPrivilegeEscalation must be false'],
      [`${C}.securityContext.readOnlyRootFilesystem`, false, 'container kipvs: readOnlyRootFilesystem must be true'],
      [`${C}.securityContext.capabilities.add`, ['NET_ADMIN', 'SYS_ADMIN'], 'container kipvs: capabilities.add must be exactly [NET_ADMIN], not ["NET_ADMIN","SYS_ADMIN"]'],
      [`${C}.volumeMounts.0.readOnly`, false, 'container kipvs: hostPath /lib/modules must be mounted read-only'],
      ['spec.template.spec.hostNetwork', false, 'hostNetwork must be true (IPVS and kube-ipvs0 are the node\'s)'],
      ['spec.template.spec.tolerations', [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists' }], 'tolerations must be one {operator: Exists} (every taint)'],
      [`${C}.livenessProbe.httpGet.path`, '/health', 'liveness probe must be HTTP GET /healthz on 10256 (kube-proxy\'s healthz port)'],
      [`${C}.ports.0.containerPort`, 10249, 'liveness probe must be HTTP GET /healthz on 10256 (kube-proxy\'s healthz port)'],
      [`${C}.args.2`, '--hostname-override=$(NODENAME)', 'unresolved $(VAR) in args: --hostname-override=$(NODENAME)'],
      [`${C}.args.3`, '--configmap=kube-system/kipvs', 'args: Unknown option \'--configmap\''],
      [`${C}.args.3`, '--config-map=kube-system/kipvs-config', '--config-map kube-system/kipvs-config is not among the manifests'],
      [`${C}.args.5`, '--ipvs-scheduler=wrr', 'flags override the ConfigMap: {"scheduler":"wrr","schedulerFlags":[]}'],
      ['spec.template.spec.serviceAccountName', 'default', 'serviceAccountName default is not a ServiceAccount of the manifests in kube-system'],
    ])('%s = %j', (path, value, problem) => {
      expect(problems(path, value)).toContainEqual(expect.stringContaining(problem));
    });
  });

  test('the agent serves the probe\'s /healthz: it takes --healthz-bind-address, default 0.0.0.0:10256', () => {
    expect(agentOptions(['--healthz-bind-address=0.0.0.0:10256']).healthzBindAddress).toBe('0.0.0.0:10256');
    expect(agentOptions([]).healthzBindAddress).toBe('0.0.0.0:10256');
  });
});

// ---- examples ------------------------------------------------------------------------------------

describe('manifests/examples: what `make demo` programs', () => {
  const services = examples.filter((o) => o.kind === 'Service') as unknown as V1Service[];
  const slices = examples.filter((o) => o.kind === 'EndpointSlice') as unknown as V1EndpointSlice[];

  test('Services and EndpointSlices agree: labels, port names, ClusterIPs in 10.96.0.0/16, schedulers', () => {
    const problems: string[] = [];
    const range = ipaddr.parseCIDR('10.96.0.0/16');
    const ips = services.flatMap((s) => s.spec?.clusterIPs ?? []);
    if (new Set(ips).size !== ips.length) problems.push(`duplicate ClusterIPs: ${ips.join(' ')}`);
    for (const s of services) {
      const id = `Service ${s.metadata?.namespace}/${s.metadata?.name}`;
      for (const ip of s.spec?.clusterIPs ?? []) if (!ipaddr.parse(ip).match(range)) problems.push(`${id}: ${ip} is outside 10.96.0.0/16`);
      if (s.spec?.clusterIP !== s.spec?.clusterIPs?.[0]) problems.push(`${id}: clusterIP is not clusterIPs[0]`);
      const scheduler = s.metadata?.annotations?.[ANNOTATION_SCHEDULER];
      if (scheduler !== undefined && !isScheduler(scheduler)) problems.push(`${id}: unknown scheduler ${scheduler}`);
      if (!slices.some((e) => e.metadata?.namespace === s.metadata?.namespace && e.metadata?.labels?.[SERVICE_NAME_LABEL] === s.metadata?.name)) {
        problems.push(`${id}: no EndpointSlice`);
      }
    }
    for (const e of slices) {
      const id = `EndpointSlice ${e.metadata?.namespace}/${e.metadata?.name}`;
      const svc = services.find((s) => s.metadata?.namespace === e.metadata?.namespace && s.metadata?.name === e.metadata?.labels?.[SERVICE_NAME_LABEL]);
      if (!svc) { problems.push(`${id}: label ${SERVICE_NAME_LABEL} names no Service`); continue; }
      for (const p of e.ports ?? []) {
        const sp = svc.spec?.ports?.find((x) => x.name === p.name);
        if (!sp) problems.push(`${id}: port ${p.name} matches no Service port name`);
        else if (sp.targetPort !== undefined && sp.targetPort !== p.port) problems.push(`${id}: port ${p.name} is ${p.port}, the Service's targetPort ${sp.targetPort}`);
      }
    }
    expect(problems).toEqual([]);
  });

  test('the agent on the directory programs every Service as the demo expects, with no error', async () => {
    const log = captureLogger();
    const kernel = new FakeKernel();
    const opts = agentOptions(['--source=dir:manifests/examples', `--hostname-override=${NODE}`]);
    const agent = await startAgent({ ...opts, logger: log, kernel });
    let blocks: string[][];
    let vips: string[];
    try {
      await agent.ready;
      blocks = kernel.table().services.map(({ service: s, destinations }) => [
        `${s.protocol} ${s.address}:${s.port} ${s.scheduler}${s.flags & 1 ? ` persistent ${s.timeout}` : ''}`,
        ...destinations.map((d) => `  -> ${d.address}:${d.port} ${d.forward}`).sort(),
      ]);
      vips = (await kernel.listAddresses('kube-ipvs0')).map((a) => `${a.address}/${a.prefixLength}`).sort();
    } finally {
      await agent.stop();
    }
    expect(blocks.sort((a, b) => a[0].localeCompare(b[0])).flat()).toEqual([
      'TCP 10.96.0.10:80 rr', '  -> 10.244.1.10:8080 masq', '  -> 10.244.2.10:8080 masq', '  -> 10.244.3.10:8080 masq',
      'TCP 10.96.0.20:80 lc', '  -> 10.244.1.20:8080 masq', '  -> 10.244.2.20:8080 masq',
      'TCP 10.96.0.30:6379 sh', '  -> 10.244.1.30:6379 masq', '  -> 10.244.2.30:6379 masq',
      'TCP 10.96.0.40:80 rr persistent 600', '  -> 10.244.2.40:8080 masq', '  -> 10.244.3.40:8080 masq',
    ]);
    expect(vips).toEqual(['10.96.0.10/32', '10.96.0.20/32', '10.96.0.30/32', '10.96.0.40/32']);
    expect(log.lines.filter((l) => l.level === 'error' || l.level === 'warn')).toEqual([]);
  });
});
