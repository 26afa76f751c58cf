// Offline checks for Kubernetes manifests. The schema is the one @kubernetes/client-node ships: its
// models are generated from the API's OpenAPI document (1.34 for client-node 1.4), each with an
// attributeTypeMap (wire name, type, format) and a .d.ts that marks required fields (no `?`).
// validateObject walks an object against the model of its apiVersion/kind and reports unknown fields,
// wrong JSON types and missing required fields. loadManifests reads YAML as kubectl would: a plain
// yes/no/on/off or 0755 is a boolean or an octal number to kubectl (YAML 1.1) but a string or a
// decimal to YAML 1.2 readers; such scalars are reported, then given kubectl's meaning.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as models from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import { DEFAULT_SCHEMA, loadAll, Schema, Type } from 'js-yaml';

interface Attribute { name: string; baseName: string; type: string; format: string }
interface Model { getAttributeTypeMap(): Attribute[] }

const MODELS = models as unknown as Record<string, Model | undefined>;
const MODEL_DIR = dirname(createRequire(import.meta.url).resolve('@kubernetes/client-node/dist/gen/models/ObjectSerializer.js'));

/** `apiVersion/kind` → the model and whether the kind is namespaced. Other kinds have no schema here. */
export const KINDS: Record<string, { model: string; namespaced: boolean }> = {
  'v1/Namespace': { model: 'V1Namespace', namespaced: false },
  'v1/Node': { model: 'V1Node', namespaced: false },
  'v1/ServiceAccount': { model: 'V1ServiceAccount', namespaced: true },
  'v1/ConfigMap': { model: 'V1ConfigMap', namespaced: true },
  'v1/Service': { model: 'V1Service', namespaced: true },
  'discovery.k8s.io/v1/EndpointSlice': { model: 'V1EndpointSlice', namespaced: true },
  'apps/v1/DaemonSet': { model: 'V1DaemonSet', namespaced: true },
  'rbac.authorization.k8s.io/v1/ClusterRole': { model: 'V1ClusterRole', namespaced: false },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': { model: 'V1ClusterRoleBinding', namespaced: false },
  'rbac.authorization.k8s.io/v1/Role': { model: 'V1Role', namespaced: true },
  'rbac.authorization.k8s.io/v1/RoleBinding': { model: 'V1RoleBinding', namespaced: true },
};

/** Fields the API server requires though the OpenAPI leaves them optional (for higher-level tools). */
const EXTRA_REQUIRED: Record<string, string[]> = { V1Container: ['image'] };
/** resource.Quantity fields: typed string in the models, but the API server takes numbers too. */
const QUANTITIES = new Set(['V1ResourceRequirements.limits', 'V1ResourceRequirements.requests', 'V1EmptyDirVolumeSource.sizeLimit']);

export interface KubeObject {
  apiVersion?: unknown;
  kind?: unknown;
  metadata?: { name?: string; namespace?: string; [k: string]: unknown };
  [k: string]: unknown;
}

const requiredCache = new Map<string, string[]>();

/** Wire names of the model's required fields: the .d.ts declares them without `?`. */
export function requiredFields(model: string): string[] {
  let req = requiredCache.get(model);
  if (!req) {
    const dts = readFileSync(join(MODEL_DIR, `${model}.d.ts`), 'utf8');
    const byName = new Map(MODELS[model]!.getAttributeTypeMap().map((a) => [a.name, a.baseName]));
    req = [...dts.matchAll(/^\s+'([^']+)'(\?)?:/gm)].filter((m) => !m[2]).map((m) => byName.get(m[1]) ?? m[1]);
    req.push(...(EXTRA_REQUIRED[model] ?? []));
    requiredCache.set(model, req);
  }
  return req;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);

function describeValue(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return `a timestamp`;
  if (isPlainObject(v)) return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const here = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = here;
    }
  }
  return d[b.length];
}

function suggestion(key: string, known: string[]): string {
  const near = known.find((k) => k.toLowerCase() === key.toLowerCase()) ?? known.find((k) => distance(k, key) <= 2);
  return near ? ` (did you mean "${near}"?)` : '';
}

const at = (path: string, key: string) => (path ? `${path}.${key}` : key);

/** Problems of `value` against `type` (a model name, a primitive, Array<T> or a map), as "path: message". */
export function validateValue(value: unknown, type: string, format: string, path: string, out: string[] = []): string[] {
  const fail = (msg: string) => void out.push(`${path || '(root)'}: ${msg}`);
  if (value === null || value === undefined) return fail(`is null (an empty value in YAML?); expected ${type}`), out;
  switch (type) {
    case 'any':
      return out;
    case 'string':
      if (typeof value !== 'string') fail(`expected a string, got ${describeValue(value)}`);
      return out;
    case 'boolean':
      if (typeof value !== 'boolean') fail(`expected a boolean, got ${describeValue(value)}`);
      return out;
    case 'number':
      if (typeof value !== 'number') fail(`expected a number, got ${describeValue(value)}`);
      else if ((format === 'int32' || format === 'int64') && !Number.isInteger(value)) fail(`expected an integer, got ${value}`);
      else if (format === 'int32' && Math.abs(value) > 0x7fffffff) fail(`${value} does not fit in an int32`);
      return out;
    case 'Date':
      if (typeof value !== 'string' && !(value instanceof Date)) fail(`expected a timestamp string, got ${describeValue(value)}`);
      return out;
    case 'IntOrString':
      if (typeof value !== 'string' && !Number.isInteger(value)) fail(`expected an integer or a string, got ${describeValue(value)}`);
      return out;
    case 'Quantity':
      if (typeof value !== 'string' && typeof value !== 'number') fail(`expected a quantity (string or number), got ${describeValue(value)}`);
      return out;
  }
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) return fail(`expected an array of ${array[1]}, got ${describeValue(value)}`), out;
    value.forEach((v, i) => validateValue(v, array[1], format, `${path}[${i}]`, out));
    return out;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (!isPlainObject(value)) return fail(`expected a map of ${map[1]}, got ${describeValue(value)}`), out;
    for (const [k, v] of Object.entries(value)) validateValue(v, map[1], format, `${path}[${JSON.stringify(k)}]`, out);
    return out;
  }
  const model = MODELS[type];
  if (!model?.getAttributeTypeMap) return fail(`no schema for type ${type}`), out;
  if (!isPlainObject(value)) return fail(`expected an object (${type}), got ${describeValue(value)}`), out;
  const attrs = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a]));
  for (const [key, v] of Object.entries(value)) {
    const attr = attrs.get(key);
    if (!attr) {
      out.push(`${at(path, key)}: unknown field in ${type}${suggestion(key, [...attrs.keys()])}`);
      continue;
    }
    const quantity = QUANTITIES.has(`${type}.${attr.name}`);
    const t = quantity ? attr.type.replace(/string(?=; \}$)|^string$/, 'Quantity') : attr.type;
    validateValue(v, t, attr.format, at(path, key), out);
  }
  for (const req of requiredFields(type)) {
    if (!(req in value)) out.push(`${at(path, req)}: required field of ${type} is missing`);
  }
  return out;
}

/** The schema entry for an object's apiVersion/kind, or undefined. */
export function kindOf(obj: KubeObject): { model: string; namespaced: boolean } | undefined {
  return KINDS[`${obj.apiVersion}/${obj.kind}`];
}

/** Every problem of one top-level object: its kind must be known, its fields valid, metadata.name set. */
export function validateObject(obj: unknown): string[] {
  if (!isPlainObject(obj)) return [`(root): expected an object, got ${describeValue(obj)}`];
  const o = obj as KubeObject;
  const kind = kindOf(o);
  if (!kind) {
    return [`(root): no schema for apiVersion ${JSON.stringify(o.apiVersion)} kind ${JSON.stringify(o.kind)} (known: ${Object.keys(KINDS).join(', ')})`];
  }
  const out = validateValue(o, kind.model, '', '');
  const name = o.metadata?.name;
  if (typeof name !== 'string' || name === '') out.push('metadata.name: required (the API server refuses an object without a name)');
  return out;
}

// ---- YAML as kubectl reads it ----------------------------------------------------------------

class Yaml11 {
  constructor(readonly text: string, readonly value: boolean | number) {}
}
const YAML11_TYPES = [
  new Type('tag:kipvs.test,2025:yaml11-bool', {
    kind: 'scalar',
    resolve: (s: string) => /^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$/.test(s),
    construct: (s: string) => new Yaml11(s, /^(y|yes|on)$/i.test(s)),
  }),
  new Type('tag:kipvs.test,2025:yaml11-octal', {
    kind: 'scalar',
    resolve: (s: string) => /^[-+]?0[0-7]+$/.test(s),
    construct: (s: string) => new Yaml11(s, parseInt(s, 8)),
  }),
];
const base = DEFAULT_SCHEMA as unknown as { implicit: Type[]; explicit: Type[] };
/** The YAML 1.1 readings come first so that 1.2's int does not take 0755 as 755. */
const KUBECTL_SCHEMA = new Schema({ implicit: [...YAML11_TYPES, ...base.implicit], explicit: base.explicit });

/** Replaces YAML 1.1 scalars by kubectl's reading, reporting each one. */
function settle(v: unknown, path: string, problems: string[]): unknown {
  if (v instanceof Yaml11) {
    problems.push(`${path}: plain ${v.text} is ${JSON.stringify(v.value)} to kubectl (YAML 1.1) but not to YAML 1.2 readers: quote it or write ${JSON.stringify(v.value)}`);
    return v.value;
  }
  if (Array.isArray(v)) return v.map((x, i) => settle(x, `${path}[${i}]`, problems));
  if (isPlainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, settle(x, at(path, k), problems)]));
  return v;
}

export interface ManifestDoc {
  /** file:document-index, and the object's kind and namespace/name when it has them. */
  where: string;
  file: string;
  object: KubeObject;
}

/** Parses YAML text (several documents) as kubectl would; empty documents are dropped. */
export function parseManifests(text: string, file: string): { docs: ManifestDoc[]; problems: string[] } {
  const problems: string[] = [];
  const docs: ManifestDoc[] = [];
  let raw: unknown[];
  try {
    raw = loadAll(text, undefined, { schema: KUBECTL_SCHEMA, filename: file });
  } catch (err) {
    return { docs, problems: [`${file}: ${(err as Error).message}`] };
  }
  raw.forEach((d, i) => {
    if (d === null || d === undefined) return;
    const own: string[] = [];
    const object = settle(d, '', own) as KubeObject;
    const name = object.metadata?.name;
    const ns = object.metadata?.namespace;
    const where = `${file}#${i} ${String(object.kind)} ${ns ? `${ns}/` : ''}${name ?? '<no name>'}`;
    problems.push(...own.map((p) => `${where}: ${p}`));
    docs.push({ where, file, object });
  });
  return { docs, problems };
}

/** Every *.yaml / *.yml below `dir` (recursively, sorted), parsed. */
export function loadManifests(dir: string): { docs: ManifestDoc[]; problems: string[]; files: string[] } {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d).sort()) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.ya?ml$/.test(e)) files.push(p);
    }
  };
  walk(dir);
  const docs: ManifestDoc[] = [];
  const problems: string[] = [];
  for (const f of files) {
    const r = parseManifests(readFileSync(f, 'utf8'), f);
    docs.push(...r.docs);
    problems.push(...r.problems);
  }
  return { docs, problems, files };
}
