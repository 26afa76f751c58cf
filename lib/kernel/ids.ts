// Keys, equality and human-readable names for kernel objects, shared by every Kernel implementation,
// the diff and the error messages: one spelling of "TCP/10.0.0.1:80" everywhere.

import ipaddr from 'ipaddr.js';
import type { Destination, DestinationId, Family, KernelOp, ServiceId, VirtualServer } from './types.js';

export function hostPort(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** 'TCP/10.0.0.1:80', 'UDP/[fd00::1]:53', 'FWM/4/100'. Unique per kernel service identity. */
export function serviceKey(s: ServiceId): string {
  return s.fwmark ? `FWM/${s.family}/${s.fwmark}` : `${s.protocol}/${hostPort(s.address, s.port)}`;
}

export function destinationKey(d: DestinationId): string {
  return hostPort(d.address, d.port);
}

/** Whether two virtual servers agree in every field, identity and settings. */
export const sameVirtualServer = (a: VirtualServer, b: VirtualServer): boolean =>
  a.family === b.family && a.protocol === b.protocol && a.address === b.address && a.port === b.port && a.fwmark === b.fwmark &&
  a.scheduler === b.scheduler && a.flags === b.flags && a.timeout === b.timeout && a.netmask === b.netmask && a.peName === b.peName;

/** Whether two real servers agree in every field, identity and settings. */
export const sameRealServer = (a: Destination, b: Destination): boolean =>
  a.family === b.family && a.address === b.address && a.port === b.port &&
  a.forward === b.forward && a.weight === b.weight && a.upperThreshold === b.upperThreshold && a.lowerThreshold === b.lowerThreshold;

export function describeOp(op: KernelOp): string {
  switch (op.kind) {
    case 'addService':
    case 'updateService':
    case 'deleteService':
      return `${op.kind} ${serviceKey(op.service)}`;
    case 'addDestination':
    case 'updateDestination':
    case 'deleteDestination':
      return `${op.kind} ${serviceKey(op.service)} -> ${destinationKey(op.destination)}`;
    case 'addAddress':
    case 'deleteAddress':
      return `${op.kind} ${op.address.address}/${op.address.prefixLength} dev ${op.ifname}`;
  }
}

const DOTTED_QUAD = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** IPv4 as Kubernetes and Linux write it (four decimal parts 0-255, no leading zeros): already canonical. */
export const isDottedQuad = (text: string): boolean => DOTTED_QUAD.test(text);

/** Canonical text of an address (ipaddr.js form: IPv6 compressed, lower case); throws on garbage. */
export function canonicalAddress(text: string): { family: Family; address: string } {
  if (isDottedQuad(text)) return { family: 4, address: text }; // the common case, without the parser
  const addr = ipaddr.parse(text);
  return { family: addr.kind() === 'ipv4' ? 4 : 6, address: addr.toString() };
}

/**
 * kipvs's mark on the virtual servers it creates: a service flag bit the kernel keeps as given
 * (ip_vs_ctl.c stores u->flags | HASHED and dumps it back) but no scheduler or ipvsadm reads. It is
 * how kipvs knows, after a restart too, which virtual servers outside kube-ipvs0's addresses (NodePorts
 * on the node's own addresses) are its own; a service without it there is never touched.
 */
export const SVC_F_KIPVS = 0x40000000;

/** Family-default host netmask as IPVS keeps it (IPv4: mask u32, IPv6: prefix length). */
export function hostNetmask(family: Family): number {
  return family === 4 ? 0xffffffff : 128;
}
