#!/bin/sh
# Install aigate as a hardened systemd service (deploy/systemd/aigate.service).
#
#   sudo deploy/systemd/install.sh [options]
#
# What it does, in order (each step is idempotent; run it again to upgrade the binary):
#   1. creates the system user and group `aigate` (no login shell, home /var/lib/aigate);
#   2. installs the binary to /usr/local/bin/aigate (0755);
#   3. writes /etc/aigate/aigate.toml (root:aigate 0640), rendered from the shipped policy by
#      deploy/render-config.sh --profile systemd: proxy on 0.0.0.0:3128 for the client networks
#      of --allowed-clients (default: the private ranges and loopback), state in /var/lib/aigate,
#      admin API left on 127.0.0.1:9180. An existing aigate.toml is never overwritten: the new
#      rendering goes to aigate.toml.new for you to compare;
#   4. with --ca-cert/--ca-key, installs a corporate CA to /etc/aigate/ca/ (directory root:aigate
#      0750, certificate 0644, key aigate:aigate 0400 — readable by the aigate user only) and
#      points [ca] at it. Without them aigate generates its own CA on first start in
#      /var/lib/aigate (ca-key.pem, aigate:aigate 0600);
#   5. creates /var/lib/aigate (aigate:aigate 0750), installs the unit to
#      /etc/systemd/system/aigate.service and docs/deployment.md to /usr/local/share/doc/aigate/;
#   6. runs `aigate check` on the installed config, then `systemctl daemon-reload`,
#      `systemctl enable aigate` and starts it, or restarts it if it was running (an upgrade);
#      --no-start leaves it stopped.
#
# Options:
#   --binary PATH     the aigate binary (default: target/release/aigate of this checkout)
#   --config PATH     the policy to render from (default: config/aigate.toml of this checkout)
#   --ca-cert PATH    corporate CA certificate (PEM); needs --ca-key
#   --ca-key PATH     corporate CA private key (PEM PKCS#8: "BEGIN PRIVATE KEY")
#   --allowed-clients CIDR[,CIDR...]
#                     the client networks that may use the proxy (gateway.allowed_clients)
#   --destdir DIR     install into DIR instead of / (also: DESTDIR=DIR). Nothing outside DIR is
#                     changed: no user is created, nothing is chowned, systemctl is not run;
#                     the owners the files would get are printed instead. Works without root.
#   --dry-run         print every step and change nothing
#   --no-start        enable the unit but do not start it
#   -h, --help        this text
#
# Exit codes: 0 ok, 64 bad usage, 66 a file to install is missing, 78 the rendered config does
# not pass `aigate check`, 1 anything else.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

binary="$repo/target/release/aigate"
config="$repo/config/aigate.toml"
ca_cert=""
ca_key=""
clients_args=""
destdir=${DESTDIR:-}
dry_run=0
start=1

usage() { sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; }
die() { code=$1; shift; echo "install.sh: $*" >&2; exit "$code"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --config) config=${2:?--config needs a path}; shift 2 ;;
        --ca-cert) ca_cert=${2:?--ca-cert needs a path}; shift 2 ;;
        --ca-key) ca_key=${2:?--ca-key needs a path}; shift 2 ;;
        --allowed-clients) clients_args="--allowed-clients ${2:?--allowed-clients needs CIDRs}"; shift 2 ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        --no-start) start=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die 64 "unknown argument: $1" ;;
    esac
done

if { [ -n "$ca_cert" ] && [ -z "$ca_key" ]; } || { [ -z "$ca_cert" ] && [ -n "$ca_key" ]; }; then
    die 64 "--ca-cert and --ca-key go together"
fi
[ -x "$binary" ] || die 66 "no executable binary at $binary (cargo build --release --locked, or pass --binary)"
[ -r "$config" ] || die 66 "cannot read the policy $config"
[ -r "$here/aigate.service" ] || die 66 "cannot read $here/aigate.service"
if [ -n "$ca_cert" ]; then
    [ -r "$ca_cert" ] || die 66 "cannot read the CA certificate $ca_cert"
    [ -r "$ca_key" ] || die 66 "cannot read the CA key $ca_key"
    grep -q -- "-----BEGIN PRIVATE KEY-----" "$ca_key" \
        || die 64 "$ca_key is not a PEM PKCS#8 key (BEGIN PRIVATE KEY); convert it: openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8"
fi

# A real install changes the system; a DESTDIR install only writes below DESTDIR.
if [ -n "$destdir" ]; then
    case "$destdir" in /*) ;; *) destdir="$(pwd)/$destdir" ;; esac
    if [ "$dry_run" = 0 ]; then mkdir -p "$destdir"; fi
    real=0
else
    real=1
    if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
        die 1 "run as root (or use --destdir DIR / --dry-run)"
    fi
fi

step() { echo "==> $*"; }
# Run a command, or only show it with --dry-run.
run() {
    echo "    $*"
    if [ "$dry_run" = 0 ]; then "$@"; fi
}
# install(1) with owner and group on a real install; in DESTDIR mode just note them.
install_as() { # OWNER GROUP MODE SRC DEST
    if [ "$real" = 1 ]; then
        run install -o "$1" -g "$2" -m "$3" "$4" "$5"
    else
        echo "    install -m $3 $4 $5   (owner $1:$2 on a real install)"
        if [ "$dry_run" = 0 ]; then install -m "$3" "$4" "$5"; fi
    fi
}
mkdir_as() { # OWNER GROUP MODE DIR
    if [ "$real" = 1 ]; then
        run install -d -o "$1" -g "$2" -m "$3" "$4"
    else
        echo "    install -d -m $3 $4   (owner $1:$2 on a real install)"
        if [ "$dry_run" = 0 ]; then install -d -m "$3" "$4"; fi
    fi
}

root=$destdir   # "" for a real install
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aigate-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

step "system user aigate"
if [ "$real" = 0 ]; then
    echo "    skipped (DESTDIR): useradd --system --user-group --home-dir /var/lib/aigate --no-create-home --shell /usr/sbin/nologin aigate"
elif getent passwd aigate >/dev/null 2>&1; then
    echo "    exists"
else
    nologin=/usr/sbin/nologin
    [ -x "$nologin" ] || nologin=/sbin/nologin
    [ -x "$nologin" ] || nologin=/bin/false
    run useradd --system --user-group --home-dir /var/lib/aigate --no-create-home \
        --shell "$nologin" --comment "aigate egress proxy" aigate
fi

step "binary -> $root/usr/local/bin/aigate"
mkdir_as root root 0755 "$root/usr/local/bin"
install_as root root 0755 "$binary" "$root/usr/local/bin/aigate"

ca_args=""
if [ -n "$ca_cert" ]; then
    step "corporate CA -> $root/etc/aigate/ca/ (key readable by aigate only)"
    mkdir_as root root 0755 "$root/etc/aigate"
    mkdir_as root aigate 0750 "$root/etc/aigate/ca"
    install_as root root 0644 "$ca_cert" "$root/etc/aigate/ca/ca-cert.pem"
    install_as aigate aigate 0400 "$ca_key" "$root/etc/aigate/ca/ca-key.pem"
    ca_args="--ca-cert /etc/aigate/ca/ca-cert.pem --ca-key /etc/aigate/ca/ca-key.pem"
fi

step "config -> $root/etc/aigate/aigate.toml"
mkdir_as root root 0755 "$root/etc/aigate"
# shellcheck disable=SC2086 # ca_args and clients_args are option pairs without spaces in them
"$repo/deploy/render-config.sh" --profile systemd $ca_args $clients_args "$config" >"$tmp/aigate.toml"
echo "    rendered from $config (listen 0.0.0.0:3128, state_dir /var/lib/aigate${ca_cert:+, [ca] /etc/aigate/ca/})"
target="$root/etc/aigate/aigate.toml"
if [ -e "$target" ] && ! cmp -s "$tmp/aigate.toml" "$target"; then
    echo "    $target exists and differs: kept; the new rendering goes to aigate.toml.new"
    target="$target.new"
fi
install_as root aigate 0640 "$tmp/aigate.toml" "$target"

step "state directory -> $root/var/lib/aigate"
mkdir_as aigate aigate 0750 "$root/var/lib/aigate"

step "unit -> $root/etc/systemd/system/aigate.service"
mkdir_as root root 0755 "$root/etc/systemd/system"
install_as root root 0644 "$here/aigate.service" "$root/etc/systemd/system/aigate.service"
if [ -r "$repo/docs/deployment.md" ]; then
    mkdir_as root root 0755 "$root/usr/local/share/doc/aigate"
    install_as root root 0644 "$repo/docs/deployment.md" "$root/usr/local/share/doc/aigate/deployment.md"
fi

step "aigate check"
if [ "$real" = 1 ]; then
    # The config names absolute paths (/var/lib/aigate, /etc/aigate/ca): check the installed file.
    if [ "$dry_run" = 0 ]; then
        /usr/local/bin/aigate check --config /etc/aigate/aigate.toml || die 78 "the installed config does not pass aigate check"
    else
        echo "    /usr/local/bin/aigate check --config /etc/aigate/aigate.toml"
    fi
elif [ "$dry_run" = 0 ]; then
    # Below DESTDIR the absolute paths do not exist yet: check a copy that points into DESTDIR.
    sed -e "s#\"/etc/aigate/#\"$root/etc/aigate/#" -e "s#\"/var/lib/aigate\"#\"$root/var/lib/aigate\"#" \
        "$tmp/aigate.toml" >"$tmp/check.toml"
    "$root/usr/local/bin/aigate" check --config "$tmp/check.toml" || die 78 "the rendered config does not pass aigate check"
else
    echo "    skipped (dry run)"
fi

step "systemd"
if [ "$real" = 0 ]; then
    echo "    skipped (DESTDIR): systemctl daemon-reload && systemctl enable --now aigate"
else
    run systemctl daemon-reload
    run systemctl enable aigate.service
    if [ "$start" = 0 ]; then
        echo "    not started (--no-start): systemctl start aigate"
    elif systemctl is-active --quiet aigate.service 2>/dev/null; then
        # An upgrade: the running service keeps the old binary and unit until restarted.
        run systemctl restart aigate.service
    else
        run systemctl start aigate.service
    fi
fi

echo "done. Next: journalctl -u aigate -f; clients use HTTPS_PROXY=http://<this host>:3128"
if [ -z "$ca_cert" ]; then
    echo "      and trust the CA aigate generates: sudo -u aigate aigate ca export --config /etc/aigate/aigate.toml"
fi
