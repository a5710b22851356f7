#!/usr/bin/env bash
# Tries deploy/firewall/aigate-egress.nft for real: network namespaces for a client, the gateway,
# a server outside the client networks and "the internet" (a vendor address and another web
# host), joined by a router namespace that loads the ruleset. Each path is one TCP connect.
#
#   bash tests/deploy/egress.sh      (as root: ip netns, nft from Debian's nftables package)
#
# Exit 0 when every path behaves as docs/deployment.md says, 1 otherwise, 77 when it cannot run
# here (not root, no nft, no network namespaces). Namespaces are named aigate-eg-<pid>-* and are
# removed on exit.
set -uo pipefail

cd "$(dirname "$0")/../.." || exit 1
ruleset=deploy/firewall/aigate-egress.nft

[ "$(id -u)" = 0 ] || { echo "egress: SKIP: needs root (ip netns)"; exit 77; }
command -v nft >/dev/null || { echo "egress: SKIP: nft not installed (apt-get install nftables)"; exit 77; }
command -v ip >/dev/null || { echo "egress: SKIP: ip not installed (iproute2)"; exit 77; }

p=aigate-eg-$$
ns=(router client gw server net)
cleanup() {
    local n
    for n in "${ns[@]}"; do ip netns del "$p-$n" 2>/dev/null; done
}
trap cleanup EXIT
for n in "${ns[@]}"; do
    ip netns add "$p-$n" || { echo "egress: SKIP: cannot create network namespaces"; exit 77; }
    ip -n "$p-$n" link set lo up
done
nsx() { local n=$1; shift; ip netns exec "$p-$n" "$@"; }

# Each side gets a veth to the router: 10.1.0.0/24 client, 10.2.0.0/24 gateway (the gateway's
# egress address stands in for AIGATE_GATEWAYS), 172.20.0.0/24 a server outside the client
# networks, 203.0.113.0/24 the internet side.
link() { # NAME SUBNET-PREFIX (e.g. 10.1.0)
    local n=$1 net=$2
    ip link add "to-$n" netns "$p-router" type veth peer name eth0 netns "$p-$n"
    nsx router ip addr add "$net.1/24" dev "to-$n"
    nsx router ip link set "to-$n" up
    nsx "$n" ip addr add "$net.2/24" dev eth0
    nsx "$n" ip link set eth0 up
    nsx "$n" ip route add default via "$net.1"
}
link client 10.1.0
link gw 10.2.0
link server 172.20.0
link net 203.0.113
nsx router sysctl -qw net.ipv4.ip_forward=1
# The internet: an Anthropic address (in AI_HOSTS_V4) and another web host.
vendor=160.79.104.10
other=198.51.100.20
nsx net ip addr add "$vendor/32" dev lo
nsx net ip addr add "$other/32" dev lo
nsx router ip route add "$vendor/32" via 203.0.113.2
nsx router ip route add "$other/32" via 203.0.113.2

# Listeners: 80, 443 and 22 on the internet side, 3128 on the gateway. `ip netns exec` execs
# python, so $! is the listener itself and the exit trap can stop it.
pids=()
listen() { # NS PORT...
    local n=$1
    shift
    ip netns exec "$p-$n" python3 -c '
import socket, sys, threading
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait()
' "$@" </dev/null >/dev/null 2>&1 &
    pids+=($!)
}
listen net 80 443 22
listen gw 3128
trap 'kill "${pids[@]}" 2>/dev/null; cleanup' EXIT

# The shipped ruleset with this topology's addresses in its four defines.
sed -e 's#^define AIGATE_GATEWAYS = .*#define AIGATE_GATEWAYS = { 10.2.0.2 }#' \
    -e 's#^define CLIENT_NETWORKS = .*#define CLIENT_NETWORKS = { 10.1.0.0/24 }#' \
    "$ruleset" >"/tmp/$p.nft"
grep -q '^define AI_HOSTS_V4 = { 160.79.104.0/23 }$' "/tmp/$p.nft" \
    || { echo "egress: FAIL: $ruleset no longer lists 160.79.104.0/23; update this test"; exit 1; }
nsx router nft -f "/tmp/$p.nft" || { echo "egress: FAIL: nft -f $ruleset"; rm -f "/tmp/$p.nft"; exit 1; }
# Loading twice must work (the file replaces its own table).
nsx router nft -f "/tmp/$p.nft" || { echo "egress: FAIL: a second nft -f $ruleset"; rm -f "/tmp/$p.nft"; exit 1; }
rm -f "/tmp/$p.nft"

# Wait for every listener port (each is its own thread; one being up says nothing of the others).
ready() {
    nsx gw bash -c 'exec 3<>/dev/tcp/10.2.0.2/3128' 2>/dev/null || return 1
    local port
    for port in 80 443 22; do
        nsx net bash -c "exec 3<>/dev/tcp/$vendor/$port" 2>/dev/null || return 1
    done
}
for _ in $(seq 100); do
    ready && break
    sleep 0.1
done
ready || { echo "egress: FAIL: the listeners did not start"; exit 1; }

failures=0
try() { # WANT(open|refused) FROM HOST PORT WHY
    local want=$1 from=$2 host=$3 port=$4 why=$5 got
    if nsx "$from" timeout 3 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then got=open; else got=refused; fi
    if [ "$got" = "$want" ]; then
        echo "  ok: $from -> $host:$port $got ($why)"
    else
        echo "  FAIL: $from -> $host:$port $got, expected $want ($why)"
        failures=$((failures + 1))
    fi
}
try open    gw     "$vendor" 443 "the gateway is the way out"
try open    gw     "$other"  443 "the gateway reaches the rest of the web"
try open    client 10.2.0.2  3128 "clients reach the gateway"
try refused client "$vendor" 443 "a client that ignores its proxy settings"
try refused client "$vendor" 80  "plain HTTP to a vendor"
try refused client "$vendor" 22  "an AI host on any port"
try refused client "$other"  443 "the client networks reach the web only through the gateway"
try open    client "$other"  22  "non-web traffic is left to your other rules"
try refused server "$vendor" 443 "a server outside the client networks, to an AI host"
try open    server "$other"  443 "a server outside the client networks, to the rest of the web"
# The counters show that the rules, not routing, refused those connections.
# Read the chain whole first: with pipefail, `grep -q` closing the pipe early could fail nft
# with SIGPIPE and the check with it.
chain=$(nsx router nft list chain inet aigate_egress forward)
grep -q 'counter packets [1-9]' <<<"$chain" \
    || { echo "  FAIL: no rule counted a packet"; failures=$((failures + 1)); }
[ "$failures" = 0 ] || exit 1
echo "egress: every path as documented"
