// The IPVS generic netlink protocol, declared as tables.
// Provenance: transcribed from the Linux kernel's include/uapi/linux/ip_vs.h (unchanged from 4.x
// through 6.x for everything below) and cross-read with net/netfilter/ipvs/ip_vs_ctl.c
// (ip_vs_genl_parse_service/_dest, ip_vs_genl_fill_*). moby/ipvs' constants_linux.go is the second reading;
// unlike it, WEIGHT is u32 and DEST_ADDR_FAMILY is sent.

import { defineTable } from '../netlink/attrs.js';

export const IPVS_GENL_NAME = 'IPVS';
export const IPVS_GENL_VERSION = 1;

/** enum IPVS_CMD_* */
export const Cmd = {
  NEW_SERVICE: 1,
  SET_SERVICE: 2,
  DEL_SERVICE: 3,
  GET_SERVICE: 4,
  NEW_DEST: 5,
  SET_DEST: 6,
  DEL_DEST: 7,
  GET_DEST: 8,
  NEW_DAEMON: 9,
  DEL_DAEMON: 10,
  GET_DAEMON: 11,
  SET_CONFIG: 12,
  GET_CONFIG: 13,
  SET_INFO: 14,
  GET_INFO: 15,
  ZERO: 16,
  FLUSH: 17,
} as const;

/** IP_VS_SVC_F_* */
export const SvcFlag = {
  PERSISTENT: 0x1,
  HASHED: 0x2,
  ONEPACKET: 0x4,
  SCHED1: 0x8,
  SCHED2: 0x10,
  SCHED3: 0x20,
} as const;

/** IP_VS_CONN_F_FWD_MASK values (IPVS_DEST_ATTR_FWD_METHOD). */
export const FwdMethod = { masq: 0, local: 1, tunnel: 2, droute: 3 } as const;
export const FWD_MASK = 0x7;

/** IPPROTO_* numbers for the protocols IPVS balances. */
export const IpProto = { TCP: 6, UDP: 17, SCTP: 132 } as const;
export const AF_INET = 2;
export const AF_INET6 = 10;

/** IPVS_STATS_ATTR_* (STATS: u32 counters except the two byte counters; STATS64: every value u64). */
export const Stats32 = defineTable('IPVS_STATS_ATTR', [
  ['conns', 1, 'u32', 'IPVS_STATS_ATTR_CONNS'],
  ['inPackets', 2, 'u32', 'IPVS_STATS_ATTR_INPKTS'],
  ['outPackets', 3, 'u32', 'IPVS_STATS_ATTR_OUTPKTS'],
  ['inBytes', 4, 'u64', 'IPVS_STATS_ATTR_INBYTES'],
  ['outBytes', 5, 'u64', 'IPVS_STATS_ATTR_OUTBYTES'],
  ['cps', 6, 'u32', 'IPVS_STATS_ATTR_CPS'],
  ['inPps', 7, 'u32', 'IPVS_STATS_ATTR_INPPS'],
  ['outPps', 8, 'u32', 'IPVS_STATS_ATTR_OUTPPS'],
  ['inBps', 9, 'u32', 'IPVS_STATS_ATTR_INBPS'],
  ['outBps', 10, 'u32', 'IPVS_STATS_ATTR_OUTBPS'],
]);

export const Stats64 = defineTable('IPVS_STATS_ATTR (64)', [
  ['conns', 1, 'u64', 'IPVS_STATS_ATTR_CONNS'],
  ['inPackets', 2, 'u64', 'IPVS_STATS_ATTR_INPKTS'],
  ['outPackets', 3, 'u64', 'IPVS_STATS_ATTR_OUTPKTS'],
  ['inBytes', 4, 'u64', 'IPVS_STATS_ATTR_INBYTES'],
  ['outBytes', 5, 'u64', 'IPVS_STATS_ATTR_OUTBYTES'],
  ['cps', 6, 'u64', 'IPVS_STATS_ATTR_CPS'],
  ['inPps', 7, 'u64', 'IPVS_STATS_ATTR_INPPS'],
  ['outPps', 8, 'u64', 'IPVS_STATS_ATTR_OUTPPS'],
  ['inBps', 9, 'u64', 'IPVS_STATS_ATTR_INBPS'],
  ['outBps', 10, 'u64', 'IPVS_STATS_ATTR_OUTBPS'],
]);

/** IPVS_SVC_ATTR_* */
export const ServiceAttrs = defineTable('IPVS_SVC_ATTR', [
  ['af', 1, 'u16', 'IPVS_SVC_ATTR_AF'],
  ['protocol', 2, 'u16', 'IPVS_SVC_ATTR_PROTOCOL'],
  ['addr', 3, 'binary', 'IPVS_SVC_ATTR_ADDR'],
  ['port', 4, 'be16', 'IPVS_SVC_ATTR_PORT'],
  ['fwmark', 5, 'u32', 'IPVS_SVC_ATTR_FWMARK'],
  ['schedName', 6, 'string', 'IPVS_SVC_ATTR_SCHED_NAME'],
  ['flags', 7, 'flags', 'IPVS_SVC_ATTR_FLAGS'],
  ['timeout', 8, 'u32', 'IPVS_SVC_ATTR_TIMEOUT'],
  ['netmask', 9, 'u32', 'IPVS_SVC_ATTR_NETMASK'],
  ['stats', 10, 'nested', 'IPVS_SVC_ATTR_STATS', Stats32],
  ['peName', 11, 'string', 'IPVS_SVC_ATTR_PE_NAME'],
  ['stats64', 12, 'nested', 'IPVS_SVC_ATTR_STATS64', Stats64],
]);

/** IPVS_DEST_ATTR_* */
export const DestAttrs = defineTable('IPVS_DEST_ATTR', [
  ['addr', 1, 'binary', 'IPVS_DEST_ATTR_ADDR'],
  ['port', 2, 'be16', 'IPVS_DEST_ATTR_PORT'],
  ['fwdMethod', 3, 'u32', 'IPVS_DEST_ATTR_FWD_METHOD'],
  ['weight', 4, 'u32', 'IPVS_DEST_ATTR_WEIGHT'],
  ['uThresh', 5, 'u32', 'IPVS_DEST_ATTR_U_THRESH'],
  ['lThresh', 6, 'u32', 'IPVS_DEST_ATTR_L_THRESH'],
  ['activeConns', 7, 'u32', 'IPVS_DEST_ATTR_ACTIVE_CONNS'],
  ['inactConns', 8, 'u32', 'IPVS_DEST_ATTR_INACT_CONNS'],
  ['persistConns', 9, 'u32', 'IPVS_DEST_ATTR_PERSIST_CONNS'],
  ['stats', 10, 'nested', 'IPVS_DEST_ATTR_STATS', Stats32],
  ['addrFamily', 11, 'u16', 'IPVS_DEST_ATTR_ADDR_FAMILY'],
  ['stats64', 12, 'nested', 'IPVS_DEST_ATTR_STATS64', Stats64],
  ['tunType', 13, 'u8', 'IPVS_DEST_ATTR_TUN_TYPE'],
  ['tunPort', 14, 'be16', 'IPVS_DEST_ATTR_TUN_PORT'],
  ['tunFlags', 15, 'u16', 'IPVS_DEST_ATTR_TUN_FLAGS'],
]);

/** IPVS_INFO_ATTR_* */
export const InfoAttrs = defineTable('IPVS_INFO_ATTR', [
  ['version', 1, 'u32', 'IPVS_INFO_ATTR_VERSION'],
  ['connTabSize', 2, 'u32', 'IPVS_INFO_ATTR_CONN_TAB_SIZE'],
]);

/** IPVS_CMD_ATTR_*: the top level of every IPVS message. */
export const CmdAttrs = defineTable('IPVS_CMD_ATTR', [
  ['service', 1, 'nested', 'IPVS_CMD_ATTR_SERVICE', ServiceAttrs],
  ['dest', 2, 'nested', 'IPVS_CMD_ATTR_DEST', DestAttrs],
  ['daemon', 3, 'binary', 'IPVS_CMD_ATTR_DAEMON'],
  ['timeoutTcp', 4, 'u32', 'IPVS_CMD_ATTR_TIMEOUT_TCP'],
  ['timeoutTcpFin', 5, 'u32', 'IPVS_CMD_ATTR_TIMEOUT_TCP_FIN'],
  ['timeoutUdp', 6, 'u32', 'IPVS_CMD_ATTR_TIMEOUT_UDP'],
]);

/** Generic netlink controller (nlctrl), to resolve the IPVS family id: linux/genetlink.h. */
export const GENL_ID_CTRL = 0x10;
export const CTRL_CMD_GETFAMILY = 3;
export const CtrlAttrs = defineTable('CTRL_ATTR', [
  ['familyId', 1, 'u16', 'CTRL_ATTR_FAMILY_ID'],
  ['familyName', 2, 'string', 'CTRL_ATTR_FAMILY_NAME'],
  ['version', 3, 'u32', 'CTRL_ATTR_VERSION'],
]);
