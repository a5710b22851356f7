#!/bin/sh
# Render a deployment config from the shipped default policy (config/aigate.toml).
#
# The policy itself (vendors, tools, rules) is copied unchanged; only the settings that depend on
# where aigate runs are edited, in their own sections:
#
#   --profile systemd     gateway.listen 0.0.0.0:3128, gateway.state_dir /var/lib/aigate;
#                         with --ca-cert/--ca-key also [ca] cert/key. Admin API stays on loopback.
#   --profile container   gateway.listen 0.0.0.0:3128, admin.listen 0.0.0.0:9180,
#                         gateway.state_dir /var/lib/aigate, log.format "json",
#                         ca.cert /etc/aigate/ca/tls.crt, ca.key /etc/aigate/ca/tls.key.
#
# Both profiles listen on every address, so both name the client networks that may use the proxy
# (gateway.allowed_clients): never an open proxy. The default is the private ranges (RFC 1918,
# fc00::/7) and loopback; narrow it to your client networks with --allowed-clients CIDR[,CIDR...].
#
# Output goes to stdout. --configmap wraps it in the Kubernetes ConfigMap of
# deploy/kubernetes/configmap.yaml. The checked-in copies are regenerated with:
#
#   deploy/render-config.sh --profile container > deploy/container/aigate.toml
#   deploy/render-config.sh --profile container --configmap > deploy/kubernetes/configmap.yaml
#
# and tests/deploy/check.sh fails when they no longer match the shipped policy.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
shipped="$here/../config/aigate.toml"
profile=""
ca_cert=""
ca_key=""
configmap=0
allowed_clients="127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"

usage() {
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    echo "usage: $0 --profile systemd|container [--ca-cert PATH --ca-key PATH] [--allowed-clients CIDR,...] [--configmap] [SHIPPED_TOML]"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile=${2:?--profile needs a value}; shift 2 ;;
        --ca-cert) ca_cert=${2:?--ca-cert needs a value}; shift 2 ;;
        --ca-key) ca_key=${2:?--ca-key needs a value}; shift 2 ;;
        --allowed-clients) allowed_clients=${2:?--allowed-clients needs a value}; shift 2 ;;
        --configmap) configmap=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "render-config: unknown option $1" >&2; usage >&2; exit 64 ;;
        *) shipped=$1; shift ;;
    esac
done

admin_listen=""
log_format=""
case "$profile" in
    systemd)
        header="systemd host (installed as /etc/aigate/aigate.toml by deploy/systemd/install.sh)"
        ;;
    container)
        header="container or Kubernetes pod (deploy/container/aigate.toml, deploy/kubernetes/configmap.yaml)"
        admin_listen="0.0.0.0:9180"
        log_format="json"
        ca_cert=${ca_cert:-/etc/aigate/ca/tls.crt}
        ca_key=${ca_key:-/etc/aigate/ca/tls.key}
        ;;
    *) echo "render-config: --profile systemd|container is required" >&2; exit 64 ;;
esac
if { [ -n "$ca_cert" ] && [ -z "$ca_key" ]; } || { [ -z "$ca_cert" ] && [ -n "$ca_key" ]; }; then
    echo "render-config: --ca-cert and --ca-key go together" >&2
    exit 64
fi
case "$ca_cert$ca_key" in
    *\"*|*\\*) echo "render-config: CA paths must not contain quotes or backslashes" >&2; exit 64 ;;
esac
case "$allowed_clients" in
    ''|*[!0-9A-Fa-f.:/,]*) echo "render-config: --allowed-clients wants CIDRs or addresses separated by commas" >&2; exit 64 ;;
esac
# As a TOML array: ["10.0.0.0/8", "192.168.0.0/16"].
clients_toml="[\"$(printf '%s' "$allowed_clients" | sed 's/,/", "/g')\"]"
[ -r "$shipped" ] || { echo "render-config: cannot read $shipped" >&2; exit 66; }

render() {
    awk -v header="$header" \
        -v listen="0.0.0.0:3128" -v state_dir="/var/lib/aigate" \
        -v admin_listen="$admin_listen" -v log_format="$log_format" \
        -v ca_cert="$ca_cert" -v ca_key="$ca_key" -v clients="$clients_toml" '
    BEGIN {
        n = 0
        add("gateway", "listen", listen)
        add("gateway", "state_dir", state_dir)
        add("gateway", "allowed_clients", clients)
        add("identity", "local_account", "false")
        add("admin", "listen", admin_listen)
        add("log", "format", log_format)
        add("ca", "cert", ca_cert)
        add("ca", "key", ca_key)
        in_preamble = 1
        section = ""
    }
    # Strings are quoted; an array (allowed_clients) and a boolean are written as they are.
    function value(v) {
        return (v ~ /^\[/ || v == "true" || v == "false") ? v : "\"" v "\""
    }
    function add(sec, key, val) {
        if (val == "") return
        want[sec, key] = val
        order_sec[++n] = sec
        order_key[n] = key
    }
    # Emit the wanted keys that the section did not have (at its end), in a fixed order.
    function flush(   i, k) {
        for (i = 1; i <= n; i++) {
            k = order_sec[i] SUBSEP order_key[i]
            if (order_sec[i] == section && !(k in done)) {
                printf "%s = %s\n", order_key[i], value(want[k])
                done[k] = 1
            }
        }
    }
    # The leading comment block of the shipped file describes the shipped file; replace it.
    in_preamble && /^#/ { next }
    in_preamble {
        in_preamble = 0
        print "# aigate — deployment config for a"
        print "# " header "."
        print "#"
        print "# Rendered from the shipped default policy (config/aigate.toml) by deploy/render-config.sh;"
        print "# only listen addresses, the client networks, the state directory, the CA files, the log"
        print "# format and identity.local_account (off: a gateway host serves other people) differ from it."
        print "# Check it with `aigate check --config FILE` (exit 78 lists every problem with its key path)."
        print "# Unknown keys are errors. Relative paths start at this file'"'"'s directory. A running gateway"
        print "# reloads this file when it changes and on SIGHUP; listen addresses, state_dir and [ca] need a"
        print "# restart. Durations are written as a number and a unit: 500ms, 30s, 10m, 12h, 14d."
    }
    /^[[:space:]]*\[/ {
        flush()
        s = $0
        sub(/^[[:space:]]*\[+[[:space:]]*/, "", s)
        sub(/[[:space:]]*\].*$/, "", s)
        section = s
        print
        next
    }
    {
        line = $0
        commented = (line ~ /^[[:space:]]*#/)
        bare = line
        sub(/^[[:space:]]*#?[[:space:]]*/, "", bare)
        if (match(bare, /^[A-Za-z0-9_]+[[:space:]]*=/)) {
            key = substr(bare, 1, RLENGTH)
            sub(/[[:space:]]*=$/, "", key)
            k = section SUBSEP key
            if (k in want) {
                if (!(k in done)) {
                    printf "%s = %s\n", key, value(want[k])
                    done[k] = 1
                    next
                }
                if (!commented) next   # a second definition would be a TOML error
            }
        }
        print
    }
    END {
        flush()
        # Sections the file does not have at all.
        for (i = 1; i <= n; i++) {
            k = order_sec[i] SUBSEP order_key[i]
            if (k in done) continue
            if (!(order_sec[i] in opened)) {
                printf "\n[%s]\n", order_sec[i]
                opened[order_sec[i]] = 1
            }
            printf "%s = %s\n", order_key[i], value(want[k])
            done[k] = 1
        }
    }
    ' "$shipped"
}

if [ "$configmap" = 1 ]; then
    cat <<'EOF'
# The policy, as the file /etc/aigate/policy/aigate.toml in the pod. Generated; do not edit by hand:
#   deploy/render-config.sh --profile container --configmap > deploy/kubernetes/configmap.yaml
# It is the same file as deploy/container/aigate.toml. aigate polls the file and reloads the policy
# when the kubelet updates the mounted ConfigMap (about a minute after `kubectl apply`); an invalid
# policy is refused and the running one stays in force (see the pod log).
apiVersion: v1
kind: ConfigMap
metadata:
  name: aigate-policy
  labels:
    app.kubernetes.io/name: aigate
    app.kubernetes.io/component: policy
data:
  aigate.toml: |
EOF
    render | awk '{ if ($0 == "") print ""; else print "    " $0 }'
else
    render
fi
