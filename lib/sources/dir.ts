// The standalone Source (`--source dir:PATH`): the Services, EndpointSlices, this node's Node and the
// agent's ConfigMap, read from the *.yaml/*.yml/*.json files of one directory (multi-document YAML
// and lists). The directory is watched (fs.watch, debounced) and re-scanned on an interval as a
// safety net; a scan re-parses only files whose text changed and reports only objects whose
// serialisation changed. A file is all-or-nothing: if it does not parse, or holds an object without
// kind or metadata.name, it is reported and the objects it last held stay (a half-written file must
// not delete Services) until it parses again or is deleted. Objects are deserialised by the client
// library's model like the informers' (sources/kube.ts), so both sources hand out the same shapes.

import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import type { V1ConfigMap, V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import { loadAll } from 'js-yaml';
import { SERVICE_NAME_LABEL, type Change, type ObjectKind, type Snapshot, type Source, type SourceError } from './types.js';

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);
/** The kinds kept: apiVersion when a manifest leaves it out, and the client model type. */
const KINDS: Record<ObjectKind, { apiVersion: string; model: string }> = {
  Service: { apiVersion: 'v1', model: 'V1Service' },
  EndpointSlice: { apiVersion: 'discovery.k8s.io/v1', model: 'V1EndpointSlice' },
  Node: { apiVersion: 'v1', model: 'V1Node' },
  ConfigMap: { apiVersion: 'v1', model: 'V1ConfigMap' },
};

export interface DirSourceOptions {
  /** This node's name: the Node object kept. Without it, Node objects are ignored. */
  nodeName?: string;
  /** namespace/name of the agent's ConfigMap (a bare name: namespace 'default'). Others are ignored. */
  configMap?: string;
  /** Quiet time after the last fs.watch event before re-scanning (ms). Default 100. */
  debounceMs?: number;
  /** Re-scan interval, the safety net under fs.watch (ms); 0 turns it off. Default 10000. */
  rescanMs?: number;
  /** Watch the directory with fs.watch. Default true. */
  watch?: boolean;
}

type KubeObject = V1Service | V1EndpointSlice | V1Node | V1ConfigMap;

/** One object as read from a file: what it is, its key, and its stable serialisation. */
interface Entry {
  kind: ObjectKind;
  key: string;
  obj: KubeObject;
  ser: string;
}

interface FileState {
  /** Text last read (or the read error), to skip unchanged files and not re-report bad ones. */
  version: string;
  /** The objects of the last version that parsed. */
  entries: Entry[];
}

export class DirSource implements Source {
  private readonly dir: string;
  private readonly nodeName?: string;
  private readonly configMapKey?: string;
  private readonly debounceMs: number;
  private readonly rescanMs: number;
  private readonly watchDir: boolean;

  private readonly services = new Map<string, V1Service>();
  private readonly endpointSlices = new Map<string, V1EndpointSlice>();
  private node?: V1Node;
  private configMap?: V1ConfigMap;

  private readonly files = new Map<string, FileState>();
  /** What the snapshot holds, by `${kind} ${key}`. */
  private current = new Map<string, Entry>();
  private readonly reported = new Set<string>();
  private dirError?: string;
  private watchError?: string;

  private onChange: (changes: Change[]) => void = () => {};
  private onError: (err: SourceError) => void = () => {};
  private started = false;
  private stopped = false;
  private isSynced = false;
  private watcher?: FSWatcher;
  private debounce?: NodeJS.Timeout;
  private interval?: NodeJS.Timeout;
  private tail: Promise<void> = Promise.resolve();
  private queued?: Promise<void>;

  constructor(dir: string, opts: DirSourceOptions = {}) {
    this.dir = dir;
    this.nodeName = opts.nodeName;
    this.configMapKey = opts.configMap && (opts.configMap.includes('/') ? opts.configMap : `default/${opts.configMap}`);
    this.debounceMs = opts.debounceMs ?? 100;
    this.rescanMs = opts.rescanMs ?? 10_000;
    this.watchDir = opts.watch ?? true;
  }

  /**
   * Scans the directory once, reporting what it holds through `onChange`, then watches it.
   * Rejects when the directory cannot be read; unreadable files only go to `onError`.
   */
  async start(onChange: (changes: Change[]) => void, onError?: (err: SourceError) => void): Promise<void> {
    if (this.started) throw new Error(`DirSource ${this.dir}: already started`);
    this.started = true;
    this.onChange = onChange;
    if (onError) this.onError = onError;
    if (this.watchDir) this.watch();
    await this.rescan();
    if (this.dirError !== undefined) {
      await this.stop();
      throw new Error(`dir ${this.dir}: ${this.dirError}`);
    }
    this.isSynced = true;
    if (this.rescanMs > 0) this.interval = setInterval(() => void this.rescan(), this.rescanMs);
  }

  snapshot(): Snapshot {
    return { services: this.services, endpointSlices: this.endpointSlices, node: this.node, configMap: this.configMap };
  }

  /** True once the first scan has completed. */
  synced(): boolean {
    return this.isSynced;
  }

  /** Stops watching; resolves after a scan in progress has finished. No onChange calls afterwards. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = undefined;
    clearTimeout(this.debounce);
    clearInterval(this.interval);
    await this.tail;
  }

  /**
   * Re-reads the directory now (what the watcher and the interval do). Calls made while a scan is
   * waiting share it; the promise resolves once a scan started after the call has finished.
   */
  rescan(): Promise<void> {
    this.queued ??= this.tail.then(() => {
      this.queued = undefined;
      return this.scan();
    });
    this.tail = this.queued;
    return this.queued;
  }

  /** Starts fs.watch; on failure the interval re-scan carries on and retries the watch. */
  private watch(): void {
    const failed = (err: Error): void => {
      this.watcher?.close();
      this.watcher = undefined;
      const reason = `cannot watch (${err.message}); re-scanning every ${this.rescanMs}ms`;
      if (reason !== this.watchError) this.report({ object: `dir ${this.dir}`, reason });
      this.watchError = reason;
    };
    try {
      this.watcher = watch(this.dir, () => {
        clearTimeout(this.debounce);
        this.debounce = setTimeout(() => void this.rescan(), this.debounceMs);
      });
      this.watcher.on('error', failed);
      this.watchError = undefined;
    } catch (err) {
      failed(err as Error);
    }
  }

  private report(err: SourceError): void {
    if (!this.stopped) this.onError(err);
  }

  private async scan(): Promise<void> {
    if (this.stopped) return;
    let names: string[];
    try {
      const dirents = await readdir(this.dir, { withFileTypes: true });
      names = dirents
        .filter((d) => (d.isFile() || d.isSymbolicLink()) && !d.name.startsWith('.') && EXTENSIONS.has(extname(d.name).toLowerCase()))
        .map((d) => d.name)
        .sort();
    } catch (err) {
      const reason = (err as Error).message;
      if (reason !== this.dirError) this.report({ object: `dir ${this.dir}`, reason });
      this.dirError = reason; // keep every object: a vanished mount is not a reason to drop Services
      return;
    }
    this.dirError = undefined;
    if (this.watchDir && !this.watcher && this.started && !this.stopped) this.watch();

    const present = new Set<string>();
    for (const name of names) {
      const file = join(this.dir, name);
      let version: string;
      let text: string | undefined;
      try {
        text = version = await readFile(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // deleted since readdir
        version = `\0${(err as Error).message}`;
      }
      present.add(name);
      const prev = this.files.get(name);
      if (prev?.version === version) continue;
      const parsed = text === undefined ? { entries: [], errors: [{ object: `file ${file}`, reason: version.slice(1) }] } : this.parse(text, file);
      for (const e of parsed.errors) this.report(e);
      this.files.set(name, { version, entries: parsed.errors.length ? (prev?.entries ?? []) : parsed.entries });
    }
    for (const name of this.files.keys()) if (!present.has(name)) this.files.delete(name);
    if (!this.stopped) this.merge();
  }

  /** Parses one file into the entries this source keeps, or the errors that make it unusable. */
  private parse(text: string, file: string): { entries: Entry[]; errors: SourceError[] } {
    const entries: Entry[] = [];
    const errors: SourceError[] = [];
    let docs: unknown[];
    try {
      docs = loadAll(text, null, { filename: file });
    } catch (err) {
      // one line for the log: js-yaml's message repeats the file name and quotes the source
      const { reason, mark } = err as { reason?: string; mark?: { line: number; column: number } };
      const where = mark ? ` at line ${mark.line + 1}, column ${mark.column + 1}` : '';
      return { entries, errors: [{ object: `file ${file}`, reason: reason ? `${reason}${where}` : (err as Error).message }] };
    }
    const visit = (raw: unknown, where: string, inherited?: { apiVersion?: string; kind: string }): void => {
      if (raw === null || raw === undefined) return;
      if (typeof raw !== 'object' || Array.isArray(raw)) {
        errors.push({ object: `file ${file}: ${where}`, reason: 'not an object' });
        return;
      }
      const o = { ...inherited, ...(raw as Record<string, unknown>) } as { kind?: unknown; apiVersion?: unknown; items?: unknown; metadata?: { name?: unknown; namespace?: unknown } };
      if (typeof o.kind !== 'string' || !o.kind) {
        errors.push({ object: `file ${file}: ${where}`, reason: 'no kind' });
        return;
      }
      if (o.kind.endsWith('List') && o.kind !== 'List' && Array.isArray(o.items)) {
        // e.g. ServiceList from the API: its items carry no kind or apiVersion of their own
        const item = { apiVersion: typeof o.apiVersion === 'string' ? o.apiVersion : undefined, kind: o.kind.slice(0, -4) };
        o.items.forEach((it, i) => visit(it, `${where}, item ${i}`, item));
        return;
      }
      if (o.kind === 'List') {
        if (!Array.isArray(o.items)) errors.push({ object: `file ${file}: ${where} (List)`, reason: 'items is not a list' });
        else o.items.forEach((it, i) => visit(it, `${where}, item ${i}`));
        return;
      }
      if (!(o.kind in KINDS)) return; // Deployments and the like may sit in the same directory
      const kind = o.kind as ObjectKind;
      const name = o.metadata?.name;
      if (typeof name !== 'string' || !name) {
        errors.push({ object: `file ${file}: ${where} (${kind})`, reason: 'no metadata.name' });
        return;
      }
      const namespace = typeof o.metadata?.namespace === 'string' && o.metadata.namespace ? o.metadata.namespace : 'default';
      const key = kind === 'Node' ? name : `${namespace}/${name}`;
      if (kind === 'Node' ? key !== this.nodeName : kind === 'ConfigMap' && key !== this.configMapKey) return;
      const metadata = kind === 'Node' ? o.metadata : { ...o.metadata, namespace };
      // The client's model, as the informers deliver it (typed fields, unknown fields dropped).
      const obj = ObjectSerializer.deserialize({ ...o, apiVersion: o.apiVersion ?? KINDS[kind].apiVersion, metadata }, KINDS[kind].model, '') as KubeObject;
      entries.push({ kind, key, obj, ser: stableJson(obj) });
    };
    docs.forEach((d, i) => visit(d, `document ${i + 1}`));
    return { entries, errors };
  }

  /** Folds the files (in name order, later wins) into the snapshot and emits what changed. */
  private merge(): void {
    const next = new Map<string, Entry>();
    const owner = new Map<string, string>();
    const duplicates = new Set<string>();
    for (const name of [...this.files.keys()].sort()) {
      for (const e of this.files.get(name)!.entries) {
        const id = `${e.kind} ${e.key}`;
        const before = owner.get(id);
        if (before !== undefined) {
          const msg = `${id}: defined in ${before === name ? `${name} twice` : `${before} and ${name}`}; the last one is used`;
          duplicates.add(msg);
          if (!this.reported.has(msg)) this.report({ object: id, reason: msg.slice(id.length + 2) });
        }
        owner.set(id, name);
        next.set(id, e);
      }
    }
    this.reported.clear();
    for (const msg of duplicates) this.reported.add(msg);

    const changes: Change[] = [];
    for (const [id, e] of next) {
      if (this.current.get(id)?.ser === e.ser) continue;
      this.put(e.kind, e.key, e.obj);
      changes.push(change(e));
    }
    for (const [id, e] of this.current) {
      if (next.has(id)) continue;
      this.put(e.kind, e.key, undefined);
      changes.push(change(e));
    }
    this.current = next;
    if (changes.length) this.onChange(changes);
  }

  private put(kind: ObjectKind, key: string, obj: KubeObject | undefined): void {
    if (kind === 'Node') this.node = obj as V1Node | undefined;
    else if (kind === 'ConfigMap') this.configMap = obj as V1ConfigMap | undefined;
    else {
      const map = (kind === 'Service' ? this.services : this.endpointSlices) as Map<string, KubeObject>;
      if (obj) map.set(key, obj);
      else map.delete(key);
    }
  }
}

/** The Change for an entry; a deleted EndpointSlice names the service it belonged to. */
function change(e: Entry): Change {
  const c: Change = { kind: e.kind, key: e.key };
  const svc = e.kind === 'EndpointSlice' ? e.obj.metadata?.labels?.[SERVICE_NAME_LABEL] : undefined;
  if (svc) c.service = `${e.obj.metadata!.namespace}/${svc}`;
  return c;
}

/** JSON with object keys sorted, so equal objects serialise equally whatever their key order. */
export function stableJson(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) =>
    val && typeof val === 'object' && !Array.isArray(val)
      ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : val,
  );
}
