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

const FIXED_SIZE: Partial<Record<WireType, number>> = { u8: 1, u16: 2, be16: 2, u32: 4, u64: 8, flags: 8 };

/** Payload length of one attribute value (without header and padding). */
function valueSize(row: AttrRow, value: AttrValue): number {
  const fixed = FIXED_SIZE[row.type];
  if (fixed !== undefined) return fixed;
  if (row.type === 'string') return Buffer.byteLength(value as string) + 1;
  if (row.type === 'binary' || Buffer.isBuffer(value)) return (value as Buffer).length;
  return streamSize(row.nested!, value as AttrRecord);
}

function streamSize(table: AttrTable, record: AttrRecord): number {
  let n = 0;
  for (const row of table.rows) {
    const value = record[row.field];
    if (value !== undefined) n += 4 + align4(valueSize(row, value));
  }
  return n;
}

/** Writes the TLV stream of `record` into `buf` at `off` (zero-filled, so padding needs no writes). */
function writeStream(table: AttrTable, record: AttrRecord, buf: Buffer, off: number): number {
  for (const row of table.rows) {
    const value = record[row.field];
    if (value === undefined) continue;
    const at = off + 4;
    let len: number;
    switch (row.type) {
      case 'u8':
        len = buf.writeUInt8(value as number, at) - at;
        break;
      case 'u16':
        len = buf.writeUInt16LE(value as number, at) - at;
        break;
      case 'be16':
        len = buf.writeUInt16BE(value as number, at) - at;
        break;
      case 'u32':
        len = buf.writeUInt32LE((value as number) >>> 0, at) - at;
        break;
      case 'u64':
        len = buf.writeBigUInt64LE(BigInt(value as bigint | number), at) - at;
        break;
      case 'string':
        len = buf.write(value as string, at, 'utf8') + 1;
        break;
      case 'binary':
        len = (value as Buffer).copy(buf, at);
        break;
      case 'flags':
        buf.writeUInt32LE((value as FlagsValue).flags >>> 0, at);
        len = buf.writeUInt32LE((value as FlagsValue).mask >>> 0, at + 4) - at;
        break;
      case 'nested': // a record, or a stream already encoded by encodeAttrs (reused across many messages)
        len = Buffer.isBuffer(value) ? value.copy(buf, at) : writeStream(row.nested!, value as AttrRecord, buf, at) - at;
        break;
    }
    buf.writeUInt16LE(4 + len, off);
    buf.writeUInt16LE(row.id | (row.type === 'nested' ? NLA_F_NESTED : 0), off + 2);
    off = at + align4(len);
  }
  return off;
}

/**
 * Encodes the fields of `record` present in `table` (in table order) as a TLV stream, after `headroom`
 * zero bytes left for the caller's fixed header (genl, ifinfomsg), so a message is built in one buffer.
 */
export function encodeAttrs(table: AttrTable, record: AttrRecord, headroom = 0): Buffer {
  const buf = Buffer.alloc(headroom + streamSize(table, record));
  writeStream(table, record, buf, headroom);
  return buf;
}

/** Reads the attribute payload buf[at, end) by its row; scalars are read in place (dumps are hot). */
function decodeValue(row: AttrRow, buf: Buffer, at: number, end: number): AttrValue {
  const min = FIXED_SIZE[row.type];
  if (min !== undefined && end - at < min) {
    throw new Error(`${row.c}: ${end - at} bytes, expected ${min}`);
  }
  switch (row.type) {
    case 'u8':
      return buf.readUInt8(at);
    case 'u16':
      return buf.readUInt16LE(at);
    case 'be16':
      return buf.readUInt16BE(at);
    case 'u32':
      return buf.readUInt32LE(at);
    case 'u64':
      return buf.readBigUInt64LE(at);
    case 'string': {
      const nul = buf.indexOf(0, at);
      return buf.toString('utf8', at, nul < 0 || nul > end ? end : nul);
    }
    case 'binary':
      return buf.subarray(at, end); // a view into the received datagram: decoders copy what they keep
    case 'flags':
      return { flags: buf.readUInt32LE(at), mask: buf.readUInt32LE(at + 4) };
    case 'nested':
      return decodeRange(row.nested!, buf, at, end);
  }
}

function decodeRange(table: AttrTable, buf: Buffer, start: number, end: number): AttrRecord {
  const out: AttrRecord = {};
  let off = start;
  while (off + 4 <= end) {
    const len = buf.readUInt16LE(off);
    const id = buf.readUInt16LE(off + 2) & NLA_TYPE_MASK;
    if (len < 4 || off + len > end) throw new Error(`${table.name}: malformed attribute at offset ${off - start}`);
    const row = table.byId.get(id);
    if (row) out[row.field] = decodeValue(row, buf, off + 4, off + len);
    else out[`attr${id}`] = Buffer.from(buf.subarray(off + 4, off + len));
    off += align4(len);
  }
  return out;
}

/** Decodes a TLV stream by `table`; attributes the table does not know are kept as `attr<id>` buffers. */
export function decodeAttrs(table: AttrTable, buf: Buffer): AttrRecord {
  return decodeRange(table, buf, 0, buf.length);
}
