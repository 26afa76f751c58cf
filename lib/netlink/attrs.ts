// Table-driven netlink attribute codec. A family declares its attributes once, as rows of
// [field name, attribute id, wire type, C name] (see ipvs/schema.ts), and this module encodes plain
// objects to TLV streams and decodes them back. Unknown attributes are kept by id, never fatal, so
// state written by newer kernels or other tools always decodes.

export type WireType = 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'string' | 'binary' | 'flags' | 'nested';

export interface AttrRow {
  readonly field: string;
  readonly id: number;
  readonly type: WireType;
  /** The kernel's name for the attribute, kept beside it for grep-ability and review. */
  readonly c: string;
  /** For 'nested': the table of the inner attributes. */
  readonly nested?: AttrTable;
}

export interface AttrTable {
  readonly name: string;
  readonly rows: readonly AttrRow[];
  readonly byId: ReadonlyMap<number, AttrRow>;
}

/** {flags, mask} as in struct ip_vs_flags: two host-endian u32. */
export interface FlagsValue {
  flags: number;
  mask: number;
}

export type AttrValue = number | bigint | string | Buffer | FlagsValue | AttrRecord;
export interface AttrRecord {
  [field: string]: AttrValue | undefined;
}

const NLA_F_NESTED = 1 << 15;
const NLA_TYPE_MASK = ~(NLA_F_NESTED | (1 << 14)) & 0xffff;
const align4 = (n: number) => (n + 3) & ~3;

export function defineTable(name: string, rows: ReadonlyArray<readonly [string, number, WireType, string, AttrTable?]>): AttrTable {
  const list = rows.map(([field, id, type, c, nested]) => ({ field, id, type, c, nested }));
  return { name, rows: list, byId: new Map(list.map((r) => [r.id, r])) };
}

function encodeValue(row: AttrRow, value: AttrValue): Buffer {
  switch (row.type) {
    case 'u8':
      return Buffer.from([value as number]);
    case 'u16': {
      const b = Buffer.alloc(2);
      b.writeUInt16LE(value as number);
      return b;
    }
    case 'be16': {
      const b = Buffer.alloc(2);
      b.writeUInt16BE(value as number);
      return b;
    }
    case 'u32': {
      const b = Buffer.alloc(4);
      b.writeUInt32LE((value as number) >>> 0);
      return b;
    }
    case 'u64': {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(BigInt(value as bigint | number));
      return b;
    }
    case 'string':
      return Buffer.concat([Buffer.from(value as string, 'utf8'), Buffer.alloc(1)]);
    case 'binary':
      return value as Buffer;
    case 'flags': {
      const f = value as FlagsValue;
      const b = Buffer.alloc(8);
      b.writeUInt32LE(f.flags >>> 0, 0);
      b.writeUInt32LE(f.mask >>> 0, 4);
      return b;
    }
    case 'nested':
      return encodeAttrs(row.nested!, value as AttrRecord);
  }
}

/** Encodes the fields of `record` present in `table` (in table order) as a TLV stream. */
export function encodeAttrs(table: AttrTable, record: AttrRecord): Buffer {
  const parts: Buffer[] = [];
  for (const row of table.rows) {
    const value = record[row.field];
    if (value === undefined) continue;
    const payload = encodeValue(row, value);
    const header = Buffer.alloc(4);
    header.writeUInt16LE(4 + payload.length, 0);
    header.writeUInt16LE(row.id | (row.type === 'nested' ? NLA_F_NESTED : 0), 2);
    parts.push(header, payload, Buffer.alloc(align4(payload.length) - payload.length));
  }
  return Buffer.concat(parts);
}

function decodeValue(row: AttrRow, data: Buffer): AttrValue {
  const need = { u8: 1, u16: 2, be16: 2, u32: 4, u64: 8, flags: 8 } as Record<WireType, number | undefined>;
  const min = need[row.type];
  if (min !== undefined && data.length < min) {
    throw new Error(`${row.c}: ${data.length} bytes, expected ${min}`);
  }
  switch (row.type) {
    case 'u8':
      return data.readUInt8(0);
    case 'u16':
      return data.readUInt16LE(0);
    case 'be16':
      return data.readUInt16BE(0);
    case 'u32':
      return data.readUInt32LE(0);
    case 'u64':
      return data.readBigUInt64LE(0);
    case 'string': {
      const nul = data.indexOf(0);
      return data.toString('utf8', 0, nul < 0 ? data.length : nul);
    }
    case 'binary':
      return Buffer.from(data);
    case 'flags':
      return { flags: data.readUInt32LE(0), mask: data.readUInt32LE(4) };
    case 'nested':
      return decodeAttrs(row.nested!, data);
  }
}

/** Decodes a TLV stream by `table`; attributes the table does not know are kept as `attr<id>` buffers. */
export function decodeAttrs(table: AttrTable, buf: Buffer): AttrRecord {
  const out: AttrRecord = {};
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    const id = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    if (len < 4 || off + len > buf.length) throw new Error(`${table.name}: malformed attribute at offset ${off}`);
    const data = buf.subarray(off + 4, off + len);
    const row = table.byId.get(id);
    if (row) out[row.field] = decodeValue(row, data);
    else out[`attr${id}`] = Buffer.from(data);
    off += align4(len);
  }
  return out;
}
