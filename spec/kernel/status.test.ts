// Assertions on what `kipvs status` printed on the real kernel (status.scenarios.ts): the exact tables,
// the exit codes, and that -o json parses and names each drift ipvsadm made.
import { scenario } from './results.js';

const NAME = 'status: in sync as programmed, then drift made with ipvsadm and ip named row by row';
const v = () => scenario(NAME);

/** A run printed exactly `lines` on stdout, nothing on stderr, and exited with `code`. */
function printed(run: unknown, code: number, lines: string[]): void {
  expect(run).toMatchObject({ code, err: '', out: lines.map((l) => `${l}\n`).join('') });
}

test('the kernel took the programming and every drift command', () => {
  expect(v().programmed).toEqual([]);
  expect(v().driftErrors).toEqual([]);
  expect(v().ipvsadm).toEqual([
    'TCP  10.1.1.1:80 wrr 10.2.0.1:80/3',
    'TCP  10.96.0.10:80 lc 10.244.1.5:8080/1',
    'TCP  10.96.0.20:443 sh 10.244.4.1:8443/1 10.244.4.2:8443/5',
    'TCP  10.96.0.30:80 lc 10.244.5.1:8080/1 10.244.9.9:8080/1',
    'TCP  10.96.0.99:8080 rr',
    'UDP  10.96.0.10:53 wrr 10.244.1.5:5353/1 10.244.2.6:5353/1',
  ]);
});

test('as programmed: `kipvs status --check` (a child process) exits 0 with every row in sync; the foreign service is not listed', () => {
  printed(v().inSync.check, 0, [
    'NAMESPACE   NAME   TYPE        VIP:PORT/PROTO         SCHEDULER      AFFINITY          ENDPOINTS   REAL SERVERS   STATE',
    'apps        dual   ClusterIP   10.96.0.30:80/TCP      lc             None              1/1         1              in sync',
    'apps        dual   ClusterIP   [fd00:96::30]:80/TCP   lc             None              1/1         1              in sync',
    'default     api    ClusterIP   10.96.0.20:443/TCP     sh (sh-port)   ClientIP 10800s   2/2         2              in sync',
    'default     web    ClusterIP   10.96.0.10:80/TCP      lc             None              2/3         2              in sync',
    'default     web    ClusterIP   10.96.0.10:53/UDP      lc             None              2/3         2              in sync',
  ]);
});

test('-o wide --all-ipvs: one row per real server, and the foreign service', () => {
  printed(v().inSync.wide, 0, [
    'NAMESPACE   NAME     TYPE        VIP:PORT/PROTO              SCHEDULER      AFFINITY          ENDPOINTS   REAL SERVERS   WEIGHT   ACTIVE   INACTIVE   STATE',
    'apps        dual     ClusterIP   10.96.0.30:80/TCP           lc             None              1/1         1                       0        0          in sync',
    '                                   -> 10.244.5.1:8080                                                                    1        0        0          in sync',
    'apps        dual     ClusterIP   [fd00:96::30]:80/TCP        lc             None              1/1         1                       0        0          in sync',
    '                                   -> [fd00:244:5::1]:8080                                                               1        0        0          in sync',
    'default     api      ClusterIP   10.96.0.20:443/TCP          sh (sh-port)   ClientIP 10800s   2/2         2                       0        0          in sync',
    '                                   -> 10.244.4.1:8443                                                                    1        0        0          in sync',
    '                                   -> 10.244.4.2:8443                                                                    1        0        0          in sync',
    'default     web      ClusterIP   10.96.0.10:80/TCP           lc             None              2/3         2                       0        0          in sync',
    '                                   -> 10.244.1.5:8080                                                                    1        0        0          in sync',
    '                                   -> 10.244.2.6:8080                                                                    1        0        0          in sync',
    'default     web      ClusterIP   10.96.0.10:53/UDP           lc             None              2/3         2                       0        0          in sync',
    '                                   -> 10.244.1.5:5353                                                                    1        0        0          in sync',
    '                                   -> 10.244.2.6:5353                                                                    1        0        0          in sync',
    '<none>      <none>   <none>      10.1.1.1:80/TCP             wrr            None              <none>      1                       0        0          foreign',
    '                                   -> 10.2.0.1:80                                                                        3        0        0          foreign',
  ]);
});

test('after drift: --check exits 1 and each row names its drift exactly', () => {
  printed(v().drifted.check, 1, [
    'NAMESPACE   NAME     TYPE        VIP:PORT/PROTO         SCHEDULER      AFFINITY          ENDPOINTS   REAL SERVERS   STATE',
    'apps        dual     ClusterIP   10.96.0.30:80/TCP      lc             None              1/1         2              mismatched: 1 extra real server',
    'apps        dual     ClusterIP   [fd00:96::30]:80/TCP   lc             None              1/1         <none>         missing',
    'default     api      ClusterIP   10.96.0.20:443/TCP     sh (sh-port)   ClientIP 10800s   2/2         2              mismatched: 1 real server differs (weight 5≠1)',
    'default     web      ClusterIP   10.96.0.10:80/TCP      lc             None              2/3         1              mismatched: 1 real server missing',
    'default     web      ClusterIP   10.96.0.10:53/UDP      lc             None              2/3         2              mismatched: scheduler wrr≠lc, kipvs mark missing',
    '<none>      <none>   <none>      10.96.0.99:8080/TCP    rr             None              <none>      0              extra',
  ]);
});

test('after drift: `-o json --all-ipvs --check` (a child process) parses, says the same, and exits 1; -o yaml is the same document', () => {
  expect(v().drifted.json).toMatchObject({
    code: 1,
    err: '',
    items: [
      'apps/dual 10.96.0.30:80/TCP mismatched: 1 extra real server',
      'apps/dual [fd00:96::30]:80/TCP missing',
      'default/api 10.96.0.20:443/TCP mismatched: 1 real server differs (weight 5≠1)',
      'default/web 10.96.0.10:80/TCP mismatched: 1 real server missing',
      'default/web 10.96.0.10:53/UDP mismatched: scheduler wrr≠lc, kipvs mark missing',
      '-/- 10.96.0.99:8080/TCP extra',
      '-/- 10.1.1.1:80/TCP foreign',
    ],
  });
  expect(v().drifted.yamlSameAsJson).toBe(true);
});

// `ipvsadm -E` (the scheduler drift) sets every service flag, so it also clears kipvs's mark: the agent would restore it.
test('--ipvs-scheduler wrr (as an agent started with it): the ConfigMap\'s lc is overridden, so dns differs only by the mark ipvsadm -E cleared, and http by its scheduler', () => {
  printed(v().drifted.flag, 0, [
    'NAMESPACE   NAME   TYPE        VIP:PORT/PROTO      SCHEDULER   AFFINITY   ENDPOINTS   REAL SERVERS   STATE',
    'default     web    ClusterIP   10.96.0.10:80/TCP   wrr         None       2/3         1              mismatched: scheduler lc≠wrr, 1 real server missing',
    'default     web    ClusterIP   10.96.0.10:53/UDP   wrr         None       2/3         2              mismatched: kipvs mark missing',
  ]);
});

test('-n apps --check: that namespace only (no extra rows), exit 1', () => {
  printed(v().drifted.namespace, 1, [
    'NAMESPACE   NAME   TYPE        VIP:PORT/PROTO         SCHEDULER   AFFINITY   ENDPOINTS   REAL SERVERS   STATE',
    'apps        dual   ClusterIP   10.96.0.30:80/TCP      lc          None       1/1         2              mismatched: 1 extra real server',
    'apps        dual   ClusterIP   [fd00:96::30]:80/TCP   lc          None       1/1         <none>         missing',
  ]);
});

test('a network namespace that does not exist: one line, exit 3', () => {
  expect(v().noNetns).toMatchObject({
    code: 3,
    out: '',
    err: "kipvs status: cannot open the kernel's IPVS in /run/netns/kipvs-no-such-netns: withNetns: cannot open network namespace '/run/netns/kipvs-no-such-netns': ENOENT (No such file or directory)\n",
  });
});

// ---- a real server draining (the second scenario) ---------------------------------------------------

const DRAIN = 'status: a real server draining a live TCP connection is draining and --check passes; a weight edited by hand still fails it';
const d = () => scenario(DRAIN);

test('the agent\'s reconciler drained the removed endpoint: weight 0 with the live connection, the new one at weight 1 (ipvsadm -Ln)', () => {
  expect(d()).toMatchObject({ first: 'ok', removal: 'ok', drainingTable: ['TCP/10.96.0.10:80 -> 10.244.1.5:8080'] });
  // addr/weight/active, before and after the status runs: the connection stayed, and kept echoing.
  expect(d().drainingBefore).toEqual(['TCP  10.96.0.10:80 10.244.1.5:8080/0/1 10.244.1.6:8080/1/0']);
  expect(d().drainingAfter).toEqual(d().drainingBefore);
  expect(d().echoedDuring).toBeGreaterThanOrEqual(3);
  expect(d().troubles).toEqual([]);
});

test('while it drains: `kipvs status --check` (a child process) says draining with its connection and exits 0', () => {
  printed(d().draining.check, 0, [
    'NAMESPACE   NAME   TYPE        VIP:PORT/PROTO      SCHEDULER   AFFINITY   ENDPOINTS   REAL SERVERS   STATE',
    'default     echo   ClusterIP   10.96.0.10:80/TCP   rr          None       1/1         2              draining: 1 real server (1 active, 0 inactive)',
  ]);
  printed(d().draining.wide, 0, [
    'NAMESPACE   NAME   TYPE        VIP:PORT/PROTO         SCHEDULER   AFFINITY   ENDPOINTS   REAL SERVERS   WEIGHT   ACTIVE   INACTIVE   STATE',
    'default     echo   ClusterIP   10.96.0.10:80/TCP      rr          None       1/1         2                       1        0          draining: 1 real server (1 active, 0 inactive)',
    '                                 -> 10.244.1.5:8080                                                     0        1        0          draining',
    '                                 -> 10.244.1.6:8080                                                     1        0        0          in sync',
  ]);
  const doc = JSON.parse(d().draining.json.out);
  expect(doc.inSync).toBe(true);
  expect(doc.items.map((r: { state: string; destinations: Array<{ address: string; state: string; weight: number; activeConns: number }> }) =>
    [r.state, r.destinations.map((x) => `${x.address} ${x.weight} ${x.activeConns} ${x.state}`)])).toEqual([
    ['draining', ['10.244.1.5 0 1 draining', '10.244.1.6 1 0 in sync']],
  ]);
});

test('a weight edited with ipvsadm on the wanted real server during the drain: `kipvs status --check` (a child process) exits 1', () => {
  printed(d().edited, 1, [
    'NAMESPACE   NAME   TYPE        VIP:PORT/PROTO      SCHEDULER   AFFINITY   ENDPOINTS   REAL SERVERS   STATE',
    'default     echo   ClusterIP   10.96.0.10:80/TCP   rr          None       1/1         2              mismatched: 1 real server differs (weight 5≠1), 1 real server draining (1 active, 0 inactive)',
  ]);
});
