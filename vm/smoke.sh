#!/usr/bin/env bash
# vm/smoke.sh — owned by vm/. Runs inside `vm/run` (`make vm-check`): proves the kernel the tests get has
# what they need (IPVS incl. SCTP, dummy, veth, netns, node) and that OUTDIR ($1) is writable from inside.
set -euo pipefail
out=${1:?usage: vm/smoke.sh OUTDIR}
step() { echo "--- $*"; }
step "kernel $(uname -r) (KIPVS_KERNEL_RELEASE=${KIPVS_KERNEL_RELEASE:-?}, mode ${KIPVS_KERNEL_MODE:-?})"
step ipvs
ipvsadm -A -t 10.0.0.1:80 -s rr && ipvsadm -a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m
ipvsadm -A --sctp-service 10.0.0.2:9 -s mh && ipvsadm -a --sctp-service 10.0.0.2:9 -r 10.1.0.2:9 -m
ipvsadm -Ln
ipvsadm -Ln | grep -q '10.1.0.1:8080' && ipvsadm -Ln | grep -q 'SCTP 10.0.0.2:9 mh'
step dummy
ip link add kube-ipvs0 type dummy && ip addr add 10.0.0.1/32 dev kube-ipvs0 && ip -br addr
step "netns + veth"
ip netns add a && ip link add v0 type veth peer name v1 netns a && ip netns exec a ip -br link
step node
node -e 'console.log(process.version)'
date -u +%FT%TZ >"$out/smoke.ok"
step "ok ($out/smoke.ok written)"
