#!/usr/bin/env bash
# Real-client check for aigate: runs the real AI coding tools and SDKs through a freshly built
# aigate against a fake vendor, and asserts what the engineer sees, what aigate audits and what the
# vendor receives. Prints PASS / FAIL / SKIP per check; exits 1 if any check failed.
#
#   tests/clients/run.sh            (must run as root: it uses `unshare -n -m` and `mount --bind`)
#
# Needs: bash, node >= 20 + npm, python3 (with venv), openssl, curl, git, iproute2 (ip),
# util-linux (unshare), cargo (unless AIGATE_BIN is given), and network access to npm and PyPI for
# the first run. Setup (installs, build, certificates, config) runs on the host; the checks run in a
# private network namespace with only loopback, and a private /etc/hosts, so nothing leaves the
# machine: aigate's [upstream.resolve] sends every vendor host to a fake vendor on 127.0.0.1:8443.
#
# Everything is written to the work dir, ${AIGATE_CLIENTS_WORK:-/tmp/aigate-clients}:
#   npm/ venv/            the clients (reused; reinstalled only when a version below changes)
#   target/               the aigate build (CARGO_TARGET_DIR), unless AIGATE_BIN=/path/to/aigate
#   certs/                the fake vendor's CA and certificate (openssl)
#   aigate.toml           config/aigate.toml with state_dir, extra_roots, [upstream.resolve] edited
#   state/                aigate's CA and audit log (fresh each run)
#   out/                  per-scenario stdout/stderr/rc, vendor.log, audit.json, results.txt
#   versions.txt          the client versions that were checked
#
# Environment: AIGATE_CLIENTS_WORK, AIGATE_BIN, AIGATE_CLIENTS_ONLY (space-separated scenario names
# to run, e.g. "claude codex"; all by default: claude loop codex codexroutes codexaihost python node gemini copilot
# blocked curl git managed),
# and the client versions: CLAUDE_CODE_VERSION, CODEX_VERSION, GEMINI_CLI_VERSION,
# COPILOT_CLI_VERSION, ANTHROPIC_NODE_VERSION, OPENAI_NODE_VERSION, UNDICI_VERSION,
# ANTHROPIC_PY_VERSION, OPENAI_PY_VERSION ("latest" works for the npm ones).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
W=${AIGATE_CLIENTS_WORK:-/tmp/aigate-clients}

: "${CLAUDE_CODE_VERSION:=2.1.329}"
: "${CODEX_VERSION:=0.171.0}"
: "${GEMINI_CLI_VERSION:=0.61.0}"
: "${COPILOT_CLI_VERSION:=1.0.102}"
: "${ANTHROPIC_NODE_VERSION:=1.11.0}"
: "${OPENAI_NODE_VERSION:=7.55.0}"
: "${UNDICI_VERSION:=7.30.2}"
: "${ANTHROPIC_PY_VERSION:=2.11.0}"
: "${OPENAI_PY_VERSION:=3.52.0}"
: "${AIGATE_CLIENTS_ONLY:=claude loop codex codexroutes codexaihost python node gemini copilot blocked curl git managed}"

PROXY=http://127.0.0.1:3128
VENDOR_PORT=8443
# The managed-cloud and relay routes use their real host names (Claude Code in Bedrock and Vertex
# mode, Codex with an OpenRouter provider), resolved by aigate to the fake vendor like the others.
HOSTS="api.anthropic.com api.openai.com chatgpt.com generativelanguage.googleapis.com api.githubcopilot.com api.github.com github.com
  bedrock-runtime.us-east-1.amazonaws.com bedrock.us-east-1.amazonaws.com us-east5-aiplatform.googleapis.com openrouter.ai
  bedrock-mantle.us-east-1.api.aws aigate-check.openai.azure.com"
HOSTS=$(echo $HOSTS)
DENY='aigate blocked this call'
# The way to an exemption that a deny message carries: aigate's request link (…/r/ID), or the
# company portal of policy.exemption_url.
LINK_RE='(/r/[A-Za-z0-9_-]+|/exemptions/new\?)'

say() { printf '%s\n' "$*" >&2; }
die() { say "run.sh: $*"; exit 2; }

# ------------------------------------------------------------------------------------------------
# Setup (host side, with network)

npm_pkg() { # NAME VERSION: install into $W/npm unless that version is there already
    local have
    have=$(node -p "require('$W/npm/node_modules/$1/package.json').version" 2>/dev/null)
    [ -n "$have" ] && [ "$have" = "$2" ] && return 0
    say "npm install $1@$2"
    (cd "$W/npm" && npm install --no-audit --no-fund --save-exact "$1@$2" >>"$W/npm/install.log" 2>&1) ||
        say "npm install $1@$2 failed (see $W/npm/install.log); its checks will SKIP"
}

setup() {
    [ "$(id -u)" = 0 ] || die "must run as root (unshare -n -m, mount --bind /etc/hosts)"
    for t in node npm python3 openssl curl ip unshare mount; do
        command -v $t >/dev/null || die "missing tool: $t"
    done
    mkdir -p "$W" || die "cannot create $W"
    W=$(cd "$W" && pwd)

    # aigate
    if [ -n "${AIGATE_BIN:-}" ]; then
        A=$(cd "$(dirname "$AIGATE_BIN")" && pwd)/$(basename "$AIGATE_BIN")
        [ -x "$A" ] || die "AIGATE_BIN=$AIGATE_BIN is not executable"
    else
        say "building aigate (cargo build --release, CARGO_TARGET_DIR=$W/target)"
        CARGO_TARGET_DIR="$W/target" cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" ||
            die "cargo build failed"
        A=$W/target/release/aigate
    fi

    # clients
    mkdir -p "$W/npm"
    [ -f "$W/npm/package.json" ] || echo '{"name": "aigate-clients-check", "private": true}' >"$W/npm/package.json"
    npm_pkg @anthropic-ai/claude-code "$CLAUDE_CODE_VERSION"
    npm_pkg @openai/codex "$CODEX_VERSION"
    npm_pkg @google/gemini-cli "$GEMINI_CLI_VERSION"
    npm_pkg @github/copilot "$COPILOT_CLI_VERSION"
    npm_pkg @anthropic-ai/sdk "$ANTHROPIC_NODE_VERSION"
    npm_pkg openai "$OPENAI_NODE_VERSION"
    npm_pkg undici "$UNDICI_VERSION"
    local pyspec="anthropic==$ANTHROPIC_PY_VERSION openai==$OPENAI_PY_VERSION"
    if [ "$(cat "$W/venv/.aigate-spec" 2>/dev/null)" != "$pyspec" ]; then
        say "pip install $pyspec"
        { [ -x "$W/venv/bin/python" ] || python3 -m venv "$W/venv"; } &&
            "$W/venv/bin/pip" install -q $pyspec >"$W/venv-install.log" 2>&1 &&
            echo "$pyspec" >"$W/venv/.aigate-spec" ||
            say "pip install failed (see $W/venv-install.log); the Python checks will SKIP"
    fi

    # The fake vendor's CA and one certificate naming every vendor host.
    local san
    san=$(printf 'DNS:%s,' $HOSTS)
    san=${san%,}
    mkdir -p "$W/certs"
    if [ "$(cat "$W/certs/san" 2>/dev/null)" != "$san" ]; then
        (
            cd "$W/certs" || exit 1
            openssl req -x509 -newkey rsa:2048 -nodes -keyout upstream-ca.key -out upstream-ca.pem -days 365 \
                -subj "/CN=aigate-clients fake upstream CA" \
                -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
                openssl req -newkey rsa:2048 -nodes -keyout vendor.key -out vendor.csr -subj "/CN=api.anthropic.com" &&
                printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' \
                    "$san" >vendor.ext &&
                openssl x509 -req -in vendor.csr -CA upstream-ca.pem -CAkey upstream-ca.key -CAcreateserial \
                    -out vendor.pem -days 365 -extfile vendor.ext
        ) >"$W/certs/openssl.log" 2>&1 || die "openssl failed (see $W/certs/openssl.log)"
        echo "$san" >"$W/certs/san"
    fi

    # aigate config: the shipped one, pointed at the work dir and the fake vendor.
    python3 - "$ROOT/config/aigate.toml" "$W/aigate.toml" "$W" "$VENDOR_PORT" $HOSTS <<'EOF' || die "cannot write $W/aigate.toml"
import re, sys
src, dst, work, port, hosts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
q = lambda s: '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'
want = {("gateway", "listen"): q("127.0.0.1:3128"), ("gateway", "state_dir"): q(work + "/state"),
        ("upstream", "extra_roots"): "[" + q(work + "/certs/upstream-ca.pem") + "]",
        ("admin", "listen"): q("127.0.0.1:9180")}
seen, out, section = set(), [], None
for line in open(src).read().splitlines():
    m = re.match(r"^\s*\[+\s*([^\]]+?)\s*\]+\s*(#.*)?$", line)
    if m:
        section = m.group(1)
        out.append(line)
        if section == "upstream.resolve":
            out += [f"{q(h)} = {q('127.0.0.1:' + port)}" for h in hosts]
            seen.add("resolve")
        continue
    m = re.match(r"^\s*([A-Za-z0-9_]+)\s*=", line)
    if m and (section, m.group(1)) in want:
        out.append(f"{m.group(1)} = {want[(section, m.group(1))]}")
        seen.add((section, m.group(1)))
        continue
    if section == "upstream.resolve" and re.match(r'^\s*"[^"]+"\s*=', line):
        continue
    out.append(line)
missing = [k for k in list(want) + ["resolve"] if k not in seen]
if missing:
    sys.exit(f"config/aigate.toml has no {missing}; update tests/clients/run.sh")
open(dst, "w").write("\n".join(out) + "\n")
EOF
    # A member of the group that may claim the sanctioned workflow (vendor-evaluation), known to
    # aigate by a proxy token generated here.
    openssl rand -hex 24 >"$W/eve-token" || die "openssl rand failed"
    printf '[[users]]\nid = "eve"\ngroups = ["ai-evaluation"]\ntokens = ["%s"]\n' \
        "$(tr -d '\n' <"$W/eve-token" | "$A" user hash-token)" >"$W/users.toml" || die "cannot write $W/users.toml"
    # And one whom an extra rule blocks whatever the tool, to see what the clients that the shipped
    # policy forwards (Gemini CLI, Copilot CLI) print when they are blocked.
    openssl rand -hex 24 >"$W/mallory-token" || die "openssl rand failed"
    printf '\n[[users]]\nid = "mallory"\ntokens = ["%s"]\n' \
        "$(tr -d '\n' <"$W/mallory-token" | "$A" user hash-token)" >>"$W/users.toml" || die "cannot write $W/users.toml"
    printf '\n[[rules]]\nname = "clients-check-blocked-user"\ndescription = "tests/clients: every call of this user is blocked"\naction = "block"\nexemptable = true\nusers = ["mallory"]\n' \
        >>"$W/aigate.toml" || die "cannot write $W/aigate.toml"
    sed -i "s|^# users_file = \"users.toml\"|users_file = \"$W/users.toml\"|" "$W/aigate.toml"
    grep -q "^users_file = " "$W/aigate.toml" || die "config/aigate.toml has no '# users_file = \"users.toml\"' line; update tests/clients/run.sh"
    # An engineer with no workflow of his own, whom the shipped policy blocks for Claude Code, and
    # an approver's admin token: the request loop of issue 16 (check_loop).
    openssl rand -hex 24 >"$W/frank-token" || die "openssl rand failed"
    printf '\n[[users]]\nid = "frank"\ntokens = ["%s"]\n' \
        "$(tr -d '\n' <"$W/frank-token" | "$A" user hash-token)" >>"$W/users.toml" || die "cannot write $W/users.toml"
    openssl rand -hex 24 >"$W/approver-token" || die "openssl rand failed"
    printf '\n[[admin.tokens]]\nuser = "clients-approver"\nroles = ["approver"]\nhash = "%s"\n' \
        "$(tr -d '\n' <"$W/approver-token" | "$A" user hash-token)" >>"$W/aigate.toml" || die "cannot write $W/aigate.toml"
    # An auditor's admin token, for `aigate provenance scan` through the running gateway's admin
    # API (the gateway holds the ledger file while it runs).
    openssl rand -hex 24 >"$W/auditor-token" || die "openssl rand failed"
    printf '\n[[admin.tokens]]\nuser = "clients-auditor"\nroles = ["auditor"]\nhash = "%s"\n' \
        "$(tr -d '\n' <"$W/auditor-token" | "$A" user hash-token)" >>"$W/aigate.toml" || die "cannot write $W/aigate.toml"
    "$A" check --config "$W/aigate.toml" >"$W/aigate-check.txt" 2>&1 || {
        cat "$W/aigate-check.txt" >&2
        die "aigate check --config $W/aigate.toml failed"
    }

    # Codex: the documented tagging recipe, a custom provider with http_headers (WebSockets off,
    # so the HTTPS POST carries the tag).
    local tag
    for tag in docs vendor-evaluation; do
        cat >"$W/codex-$tag.toml" <<EOF
model_provider = "openai-aigate"

[model_providers.openai-aigate]
name = "OpenAI via aigate"
base_url = "https://api.openai.com/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
supports_websockets = false
http_headers = { "x-aigate-workflow" = "$tag" }
EOF
    done
    { echo "127.0.0.1 localhost"; echo "::1 localhost"; echo "127.0.0.1 $HOSTS"; } >"$W/hosts"

    versions
}

versions() {
    local v f=$W/versions.txt
    : >"$f"
    ver() { printf '%-28s %s\n' "$1" "${2:-not installed}" >>"$f"; }
    nv() { node -p "require('$W/npm/node_modules/$1/package.json').version" 2>/dev/null; }
    ver aigate "$("$A" --version 2>/dev/null | head -1) ($A)"
    ver "Claude Code" "$(nv @anthropic-ai/claude-code)"
    ver "Codex CLI" "$(nv @openai/codex)"
    ver "Gemini CLI" "$(nv @google/gemini-cli)"
    ver "Copilot CLI" "$(nv @github/copilot)"
    ver "@anthropic-ai/sdk (Node)" "$(nv @anthropic-ai/sdk)"
    ver "openai (Node)" "$(nv openai)"
    ver "undici (Node)" "$(nv undici)"
    ver "anthropic (Python)" "$("$W/venv/bin/python" -c 'import anthropic; print(anthropic.__version__)' 2>/dev/null)"
    ver "openai (Python)" "$("$W/venv/bin/python" -c 'import openai; print(openai.__version__)' 2>/dev/null)"
    ver node "$(node --version)"
    ver python "$("$W/venv/bin/python" --version 2>/dev/null | cut -d' ' -f2)"
    ver curl "$(curl --version | head -1 | cut -d' ' -f2)"
    ver git "$(git --version 2>/dev/null | cut -d' ' -f3)"
    say "client versions ($f):"
    sed 's/^/  /' "$f" >&2
}

# ------------------------------------------------------------------------------------------------
# Checks (inside `unshare -n -m`: loopback only, private /etc/hosts)

OUT= AUDIT_JSON= SEQ0=0 RC=0 ELAPSED=0 FAILS=0

result() { # STATUS NAME [DETAIL...]
    local st=$1 name=$2
    shift 2
    printf '%-4s %s%s\n' "$st" "$name" "${*:+ — $*}" | tee -a "$OUT/results.txt"
    [ "$st" = FAIL ] && FAILS=$((FAILS + 1))
    return 0
}

# expect NAME COMMAND...: PASS if the command succeeds, FAIL (with its output) otherwise.
expect() {
    local name=$1 o
    shift
    if o=$("$@" 2>&1); then
        result PASS "$name"
    else
        result FAIL "$name"
        printf '%s\n' "$o" | head -40 | sed 's/^/       /' | tee -a "$OUT/results.txt"
    fi
}

audit_has() { python3 "$HERE/check.py" audit "$AUDIT_JSON" --after "$SEQ0" "$@"; }
vendor_has() { python3 "$HERE/check.py" vendor "$OUT/vendor.log" "$@"; }
output_has() { grep -qF -- "$2" "$OUT/$1.stdout" "$OUT/$1.stderr" || { echo "  \"$2\" not in $OUT/$1.{stdout,stderr}"; tail -5 "$OUT/$1.stderr" "$OUT/$1.stdout"; return 1; }; }
# deny_line NAME: the deny message and the link to an exemption on one line of the client's output
# (a terminal shows it whole), and no advice to fix a login that is fine.
deny_line() {
    link_line "$1" &&
        { ! grep -iE -- 'Failed to authenticate|/login|authentication failed|credentials' "$OUT/$1.stdout" "$OUT/$1.stderr" ||
            { echo "  the client blames the login for a policy block (above)"; return 1; }; }
}
link_line() { # NAME: the deny message and the link on one line
    grep -qE -- "$DENY.*$LINK_RE" "$OUT/$1.stdout" "$OUT/$1.stderr" ||
        { echo "  no line with \"$DENY\" and a link ($LINK_RE) in $OUT/$1.{stdout,stderr}"; tail -5 "$OUT/$1.stderr" "$OUT/$1.stdout"; return 1; }
}
rc_is() { [ "$RC" = "$1" ] || { echo "  exit code $RC, want $1 (see $OUT/$2.{stdout,stderr})"; tail -8 "$OUT/$2.stderr" "$OUT/$2.stdout"; return 1; }; }
not_timed_out() { [ "$RC" != 124 ] || { echo "  still running after the timeout"; return 1; }; }

refresh_audit() {
    sleep 0.5
    "$A" audit query "$W/state/audit.jsonl" --format json >"$AUDIT_JSON" 2>"$OUT/audit-query.stderr"
}

# client NAME TIMEOUT ENV... -- COMMAND...: runs a client with a fresh HOME and a clean environment.
client() {
    local name=$1 t=$2 home=$W/homes/$1 s
    shift 2
    local envs=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    refresh_audit
    SEQ0=$(python3 "$HERE/check.py" lastseq "$AUDIT_JSON")
    python3 "$HERE/check.py" mark "$OUT/vendor.log" "$name"
    rm -rf "$home" && mkdir -p "$home"
    [ -n "${PREP_HOME:-}" ] && $PREP_HOME "$home"
    s=$(date +%s%N)
    (cd "$home" && env -i PATH="$W/npm/node_modules/.bin:$PATH" HOME="$home" USER=root LANG=C.UTF-8 TERM=dumb \
        "${envs[@]}" timeout "$t" "$@" </dev/null >"$OUT/$name.stdout" 2>"$OUT/$name.stderr")
    RC=$?
    ELAPSED=$(( ($(date +%s%N) - s) / 1000000 ))
    echo "rc=$RC elapsed_ms=$ELAPSED" >"$OUT/$name.rc"
    say "---- $name: exit $RC after ${ELAPSED} ms"
    refresh_audit
}

have() { [ -e "$W/npm/node_modules/$1/package.json" ]; }
want() { [[ " $AIGATE_CLIENTS_ONLY " == *" $1 "* ]]; }

check_claude() {
    have @anthropic-ai/claude-code || { result SKIP "Claude Code" "not installed"; return; }
    local base=(HTTPS_PROXY=$PROXY NODE_EXTRA_CA_CERTS=$CA ANTHROPIC_API_KEY=sk-ant-fake-000)
    client claude-untagged 120 "${base[@]}" -- claude -p "Say hi"
    expect "Claude Code untagged: prints the aigate deny message" output_has claude-untagged "$DENY"
    expect "Claude Code untagged: deny message quotes the request id" output_has claude-untagged "Request id:"
    expect "Claude Code untagged: the block and its link on one line, no login advice" deny_line claude-untagged
    expect "Claude Code untagged: audit tool=claude-code action=block POST /v1/messages" \
        audit_has --tool claude-code --action block --method POST --path /v1/messages --workflow untagged --status 403
    expect "Claude Code untagged: vendor received no /v1/messages" \
        bash -c '! python3 "$0" vendor "$1" --scenario claude-untagged --path /v1/messages >/dev/null' "$HERE/check.py" "$OUT/vendor.log"

    expect "Claude Code untagged: no conflict (Claude Code is built on the Anthropic SDK)" \
        audit_has --tool claude-code --action block --method POST --path /v1/messages --field 'tool_conflicts=[]'

    # The shipped policy is an allow-list: a tag does not open the way...
    client claude-docs 120 "${base[@]}" "ANTHROPIC_CUSTOM_HEADERS=x-aigate-workflow: docs" -- claude -p "Say hi"
    expect "Claude Code tagged docs: prints the aigate deny message" output_has claude-docs "$DENY"
    expect "Claude Code tagged docs: audit tool=claude-code action=block workflow=docs POST /v1/messages" \
        audit_has --tool claude-code --action block --workflow docs --method POST --path /v1/messages --status 403
    expect "Claude Code tagged docs: vendor received no /v1/messages" \
        bash -c '! python3 "$0" vendor "$1" --scenario claude-docs --path /v1/messages >/dev/null' "$HERE/check.py" "$OUT/vendor.log"

    # ...a near-miss of a protected tag is an unknown tag, recorded as claimed...
    client claude-near-miss 120 "${base[@]}" "ANTHROPIC_CUSTOM_HEADERS=x-aigate-workflow: training_data" -- claude -p "Say hi"
    expect "Claude Code tagged training_data: prints the aigate deny message" output_has claude-near-miss "$DENY"
    expect "Claude Code tagged training_data: audit block as untagged, claimed training_data (workflow_unknown)" \
        audit_has --tool claude-code --action block --workflow untagged --method POST --path /v1/messages \
        --field workflow_claimed=training_data --field workflow_reason=workflow_unknown

    # ...and the sanctioned workflow, claimed by a member of its group, is monitored.
    client claude-eval 120 HTTPS_PROXY=$EVE_PROXY NODE_EXTRA_CA_CERTS=$CA ANTHROPIC_API_KEY=sk-ant-fake-000 \
        "ANTHROPIC_CUSTOM_HEADERS=x-aigate-workflow: vendor-evaluation" -- claude -p "Say hi"
    expect "Claude Code as eve in vendor-evaluation: exits 0" rc_is 0 claude-eval
    expect "Claude Code as eve in vendor-evaluation: prints the vendor's answer" output_has claude-eval "hi from fake vendor"
    expect "Claude Code as eve in vendor-evaluation: audit monitor, forwarded, user eve" \
        audit_has --tool claude-code --action monitor --workflow vendor-evaluation --method POST --path /v1/messages \
        --status 200 --field user=eve --field would_block=true
    expect "Claude Code as eve in vendor-evaluation: vendor got /v1/messages without x-aigate-workflow" \
        vendor_has --scenario claude-eval --method POST --path /v1/messages --header-absent x-aigate-workflow

    check_claude_clouds
    check_claude_write
}

# Provenance end to end (issue 17): in the sanctioned workflow, Claude Code writes a file through
# the vendor's Write tool use (the fake vendor answers `AIGATE_WRITE_FILE PATH` with one, whose
# content is its PASSAGE), into a work folder, with edits accepted without asking. The gateway
# captured that answer into its ledger; `aigate provenance scan` of the work folder finds the file
# and names the call's audit record.
prep_write_home() { mkdir -p "$1/work"; }
check_claude_write() {
    local home=$W/homes/claude-write file scan=$OUT/claude-write.scan.json
    file=$home/work/token_bucket.py
    PREP_HOME=prep_write_home client claude-write 180 HTTPS_PROXY=$EVE_PROXY NODE_EXTRA_CA_CERTS=$CA \
        ANTHROPIC_API_KEY=sk-ant-fake-000 "ANTHROPIC_CUSTOM_HEADERS=x-aigate-workflow: vendor-evaluation" \
        -- claude -p "AIGATE_WRITE_FILE $file" --permission-mode acceptEdits --allowedTools Write
    expect "Claude Code writes a file through the vendor's Write tool use: exits 0" rc_is 0 claude-write
    expect "Claude Code Write: the file holds the vendor's passage" \
        python3 -c 'import sys; t = open(sys.argv[1]).read(); sys.exit(0 if "class TokenBucket" in t and len(t) > 400 else "short: " + t)' "$file"
    expect "Claude Code Write: audit monitor in vendor-evaluation, the answer captured with fingerprints" \
        audit_has --tool claude-code --action monitor --workflow vendor-evaluation --path /v1/messages \
        --field provenance=captured --field user=eve
    # The record ids of this scenario's captured calls, for the scan to name.
    python3 - "$AUDIT_JSON" "$SEQ0" >"$OUT/claude-write.captured" <<'PY'
import json, sys
seq0 = int(sys.argv[2])
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if int(r.get("seq", 0)) > seq0 and r.get("provenance") == "captured" and (r.get("provenance_fingerprints") or 0) > 0:
        print(r["id"])
PY
    AIGATE_TOKEN=$(tr -d '\n' <"$W/auditor-token") "$A" provenance scan "$home/work" --config "$W/aigate.toml" \
        --admin http://127.0.0.1:9180 --format json >"$scan" 2>"$OUT/claude-write.scan.stderr"
    echo "rc=$?" >"$OUT/claude-write.scan.rc"
    expect "aigate provenance scan of the work folder: exit 3 (findings)" grep -qx 'rc=3' "$OUT/claude-write.scan.rc"
    expect "aigate provenance scan: finds token_bucket.py and names the Write call's record" \
        python3 - "$scan" "$OUT/claude-write.captured" <<'PY'
import json, sys
scan = open(sys.argv[1]).read()
ids = [l.strip() for l in open(sys.argv[2]) if l.strip()]
if not ids:
    sys.exit("no captured claude-code call with fingerprints in this scenario's audit records")
if "token_bucket.py" not in scan:
    sys.exit("token_bucket.py is not in the scan report:\n" + scan[:2000])
named = [i for i in ids if i in scan]
if not named:
    sys.exit(f"the scan names none of the captured records {ids}:\n" + scan[:2000])
print("named", named)
PY
}

# Issue 16's loop with the real Claude Code: blocked, the link it prints, a request submitted from
# that link's draft, an approver's approval, and Claude Code's next run goes through under the
# exemption. The console's pages for the same loop are tested in a browser (tests/it/
# browser_requests.rs); here the request and the approval go through the JSON API they share.
check_loop() {
    have @anthropic-ai/claude-code || { result SKIP "Claude Code request loop" "not installed"; return; }
    local base=(HTTPS_PROXY=$FRANK_PROXY NODE_EXTRA_CA_CERTS=$CA ANTHROPIC_API_KEY=sk-ant-fake-000)
    client loop-blocked 120 "${base[@]}" -- claude -p "Say hi"
    expect "Request loop: Claude Code as frank is blocked, the message and its link on one line" deny_line loop-blocked
    local draft
    draft=$(grep -ohE '/r/[A-Za-z0-9_-]+' "$OUT/loop-blocked.stdout" "$OUT/loop-blocked.stderr" | head -1)
    draft=${draft#/r/}
    expect "Request loop: the link names a draft" test -n "$draft"
    curl -sS -o "$OUT/loop-request.json" -w '%{http_code}' -X POST http://127.0.0.1:9180/v1/requests \
        -H 'content-type: application/json' \
        -d "{\"draft\": \"$draft\", \"justification\": \"tests/clients request loop\", \"duration\": \"1h\"}" \
        >"$OUT/loop-request.status" 2>&1
    expect "Request loop: the request from the draft is accepted (201)" grep -qx 201 "$OUT/loop-request.status"
    local rq
    rq=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("id", ""))' "$OUT/loop-request.json" 2>/dev/null)
    curl -sS -o "$OUT/loop-approve.json" -w '%{http_code}' -X POST "http://127.0.0.1:9180/v1/requests/$rq/approve" \
        -H "Authorization: Bearer $(tr -d '\n' <"$W/approver-token")" -H 'content-type: application/json' \
        -d '{"comment": "tests/clients"}' >"$OUT/loop-approve.status" 2>&1
    expect "Request loop: the approver approves it (200)" grep -qx 200 "$OUT/loop-approve.status"
    local ex
    ex=$(python3 -c 'import json,sys; print((json.load(open(sys.argv[1])).get("granted") or {}).get("id", ""))' "$OUT/loop-approve.json" 2>/dev/null)
    expect "Request loop: the approval created an exemption" test -n "$ex"
    client loop-through 120 "${base[@]}" -- claude -p "Say hi"
    expect "Request loop: Claude Code's next run exits 0" rc_is 0 loop-through
    expect "Request loop: it prints the vendor's answer" output_has loop-through "hi from fake vendor"
    expect "Request loop: its record is exempted and names the exemption" \
        audit_has --tool claude-code --method POST --path /v1/messages --status 200 --field user=frank \
        --field reason=exempted --field "exemption=\"$ex\""
}

# Claude Code on Amazon Bedrock and Google Vertex AI, at their real host names: still Claude Code
# (not a tunnel), blocked with a message it prints, monitored in the sanctioned workflow.
check_claude_clouds() {
    local bedrock=(CLAUDE_CODE_USE_BEDROCK=1 AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=AKIAFAKEFAKEFAKEFAKE
        AWS_SECRET_ACCESS_KEY=fake/secret/access/key/000000000000000)
    local vertex=(CLAUDE_CODE_USE_VERTEX=1 CLOUD_ML_REGION=us-east5 ANTHROPIC_VERTEX_PROJECT_ID=aigate-check
        CLAUDE_CODE_SKIP_VERTEX_AUTH=1)
    local bhost=bedrock-runtime.us-east-1.amazonaws.com vhost=us-east5-aiplatform.googleapis.com

    client claude-bedrock 120 HTTPS_PROXY=$PROXY NODE_EXTRA_CA_CERTS=$CA "${bedrock[@]}" -- claude -p "Say hi"
    expect "Claude Code on Bedrock: prints the aigate deny message" output_has claude-bedrock "$DENY"
    expect "Claude Code on Bedrock: the block and its link on one line, no login advice" deny_line claude-bedrock
    expect "Claude Code on Bedrock: audit tool=claude-code block POST /model/…/invoke-with-response-stream" \
        audit_has --tool claude-code --action block --host $bhost --method POST --path /model/ --status 403
    expect "Claude Code on Bedrock: vendor received no InvokeModel" \
        bash -c '! python3 "$0" vendor "$1" --scenario claude-bedrock --host "$2" >/dev/null' "$HERE/check.py" "$OUT/vendor.log" $bhost

    client claude-vertex 120 HTTPS_PROXY=$PROXY NODE_EXTRA_CA_CERTS=$CA "${vertex[@]}" -- claude -p "Say hi"
    expect "Claude Code on Vertex AI: prints the aigate deny message" output_has claude-vertex "$DENY"
    expect "Claude Code on Vertex AI: the block and its link on one line, no login advice" deny_line claude-vertex
    expect "Claude Code on Vertex AI: audit tool=claude-code block POST …/publishers/anthropic/…:streamRawPredict" \
        audit_has --tool claude-code --action block --host $vhost --method POST --path /v1/projects/aigate-check/ --status 403
    expect "Claude Code on Vertex AI: vendor received no rawPredict" \
        bash -c '! python3 "$0" vendor "$1" --scenario claude-vertex --host "$2" >/dev/null' "$HERE/check.py" "$OUT/vendor.log" $vhost

    # The sanctioned workflow: Bedrock signs the tag (SigV4), so aigate keeps it and says so.
    client claude-bedrock-eval 120 HTTPS_PROXY=$EVE_PROXY NODE_EXTRA_CA_CERTS=$CA "${bedrock[@]}" \
        "ANTHROPIC_CUSTOM_HEADERS=x-aigate-workflow: vendor-evaluation" -- claude -p "Say hi"
    expect "Claude Code on Bedrock as eve in vendor-evaluation: exits 0" rc_is 0 claude-bedrock-eval
    expect "Claude Code on Bedrock as eve in vendor-evaluation: prints the vendor's answer (event stream)" \
        output_has claude-bedrock-eval "hi from fake vendor"
    expect "Claude Code on Bedrock as eve in vendor-evaluation: audit monitor, forwarded, signed tag kept" \
        audit_has --tool claude-code --action monitor --workflow vendor-evaluation --host $bhost --method POST \
        --path /model/ --status 200 --field user=eve --field 'signed_headers_kept=["x-aigate-workflow"]'
    expect "Claude Code on Bedrock as eve in vendor-evaluation: the answer (AWS event stream) captured for provenance" \
        audit_has --tool claude-code --host $bhost --path /model/ --field provenance=captured

    client claude-vertex-eval 120 HTTPS_PROXY=$EVE_PROXY NODE_EXTRA_CA_CERTS=$CA "${vertex[@]}" \
        "ANTHROPIC_CUSTOM_HEADERS=x-aigate-workflow: vendor-evaluation" -- claude -p "Say hi"
    expect "Claude Code on Vertex AI as eve in vendor-evaluation: exits 0" rc_is 0 claude-vertex-eval
    expect "Claude Code on Vertex AI as eve in vendor-evaluation: prints the vendor's answer" \
        output_has claude-vertex-eval "hi from fake vendor"
    expect "Claude Code on Vertex AI as eve in vendor-evaluation: audit monitor, forwarded" \
        audit_has --tool claude-code --action monitor --workflow vendor-evaluation --host $vhost --method POST \
        --path /v1/projects/aigate-check/ --status 200 --field user=eve
    expect "Claude Code on Vertex AI as eve in vendor-evaluation: the answer (SSE) captured for provenance" \
        audit_has --tool claude-code --host $vhost --path /v1/projects/aigate-check/ --field provenance=captured
    expect "Claude Code on Vertex AI as eve in vendor-evaluation: vendor got the call without x-aigate-workflow" \
        vendor_has --scenario claude-vertex-eval --host $vhost --method POST --header-absent x-aigate-workflow
}

check_codex() {
    have @openai/codex || { result SKIP "Codex CLI" "not installed"; return; }
    client codex-untagged 180 HTTPS_PROXY=$PROXY CODEX_CA_CERTIFICATE=$CA SSL_CERT_FILE=$CA CODEX_API_KEY=sk-fake-000 \
        -- codex exec --skip-git-repo-check "Say hi"
    expect "Codex untagged: exits by itself (took ${ELAPSED} ms, limit 180 s)" not_timed_out
    expect "Codex untagged: prints the aigate deny message" output_has codex-untagged "$DENY"
    expect "Codex untagged: the block and its link on one line, no login advice" deny_line codex-untagged
    # A 403 was retried: six POSTs after the WebSocket attempts. A 400 ends it at the WebSocket
    # upgrade or at the first POST.
    expect "Codex untagged: the model call is not retried (at most one POST /v1/responses)" \
        audit_has --tool codex-cli --method POST --path /v1/responses --at-most 1
    expect "Codex untagged: audit tool=codex-cli block WebSocket GET /v1/responses" \
        audit_has --tool codex-cli --action block --method GET --path /v1/responses --status 400

    PREP_HOME=codex_home_docs client codex-docs 180 HTTPS_PROXY=$PROXY CODEX_CA_CERTIFICATE=$CA SSL_CERT_FILE=$CA \
        OPENAI_API_KEY=sk-fake-000 -- codex exec --skip-git-repo-check "Say hi"
    expect "Codex tagged docs (custom provider): exits by itself" not_timed_out
    expect "Codex tagged docs: prints the aigate deny message" output_has codex-docs "$DENY"
    expect "Codex tagged docs: audit tool=codex-cli action=block workflow=docs POST /v1/responses" \
        audit_has --tool codex-cli --action block --workflow docs --method POST --path /v1/responses --status 400

    PREP_HOME=codex_home_eval client codex-eval 180 HTTPS_PROXY=$EVE_PROXY CODEX_CA_CERTIFICATE=$CA SSL_CERT_FILE=$CA \
        OPENAI_API_KEY=sk-fake-000 -- codex exec --skip-git-repo-check "Say hi"
    expect "Codex as eve in vendor-evaluation (custom provider): exits 0" rc_is 0 codex-eval
    expect "Codex as eve in vendor-evaluation: prints the vendor's answer" output_has codex-eval "hi from fake vendor"
    expect "Codex as eve in vendor-evaluation: audit monitor, forwarded, user eve" \
        audit_has --tool codex-cli --action monitor --workflow vendor-evaluation --method POST --path /v1/responses \
        --status 200 --field user=eve
    expect "Codex as eve in vendor-evaluation: vendor got /v1/responses without x-aigate-workflow" \
        vendor_has --scenario codex-eval --method POST --path /v1/responses --header-absent x-aigate-workflow
}
# Codex with a custom model provider at a relay (OpenRouter), and Codex signed in with ChatGPT.
check_codexroutes() {
    have @openai/codex || { result SKIP "Codex CLI routes" "not installed"; return; }
    PREP_HOME=codex_home_openrouter client codex-openrouter 180 HTTPS_PROXY=$PROXY CODEX_CA_CERTIFICATE=$CA \
        SSL_CERT_FILE=$CA OPENROUTER_API_KEY=sk-or-fake-000 -- codex exec --skip-git-repo-check "Say hi"
    expect "Codex with an OpenRouter model_providers entry: exits by itself" not_timed_out
    expect "Codex with an OpenRouter provider: the block and its link on one line" deny_line codex-openrouter
    expect "Codex with an OpenRouter provider: audit tool=codex-cli block at openrouter.ai" \
        audit_has --tool codex-cli --action block --host openrouter.ai --method POST --path /api/v1/responses --status 400
    expect "Codex with an OpenRouter provider: vendor received no /responses" \
        bash -c '! python3 "$0" vendor "$1" --scenario codex-openrouter --path /responses >/dev/null' "$HERE/check.py" "$OUT/vendor.log"

    # The built-in amazon-bedrock provider (Bedrock Mantle, a Bedrock API key) and an Azure OpenAI
    # provider.
    client codex-bedrock 180 HTTPS_PROXY=$PROXY CODEX_CA_CERTIFICATE=$CA SSL_CERT_FILE=$CA \
        AWS_BEARER_TOKEN_BEDROCK=bedrock-api-key-fake AWS_REGION=us-east-1 \
        -- codex exec --skip-git-repo-check -c model_provider=amazon-bedrock "Say hi"
    expect "Codex with the amazon-bedrock provider: exits by itself" not_timed_out
    expect "Codex with the amazon-bedrock provider: the block and its link on one line" deny_line codex-bedrock
    expect "Codex with the amazon-bedrock provider: audit tool=codex-cli block at bedrock-mantle" \
        audit_has --tool codex-cli --action block --host bedrock-mantle.us-east-1.api.aws --status 400

    PREP_HOME=codex_home_azure client codex-azure 180 HTTPS_PROXY=$PROXY CODEX_CA_CERTIFICATE=$CA SSL_CERT_FILE=$CA \
        AZURE_OPENAI_API_KEY=azure-fake-000 -- codex exec --skip-git-repo-check "Say hi"
    expect "Codex with an Azure OpenAI provider: exits by itself" not_timed_out
    expect "Codex with an Azure OpenAI provider: the block and its link on one line" deny_line codex-azure
    expect "Codex with an Azure OpenAI provider: audit tool=codex-cli block at *.openai.azure.com" \
        audit_has --tool codex-cli --action block --host aigate-check.openai.azure.com --method POST --status 400

    PREP_HOME=codex_home_chatgpt client codex-chatgpt 180 HTTPS_PROXY=$PROXY CODEX_CA_CERTIFICATE=$CA SSL_CERT_FILE=$CA \
        -- codex exec --skip-git-repo-check "Say hi"
    expect "Codex signed in with ChatGPT: exits by itself" not_timed_out
    # Its start-up side calls (workspace config, workspace routing, plugins, models) are the
    # openai vendor's side_calls: forwarded as monitor/side_call, so that Codex reaches its model
    # call, and the deny of that call is what it prints (issue 16).
    expect "Codex signed in with ChatGPT: start-up side call forwarded, monitor/side_call (GET /backend-api/wham/config/bundle)" \
        audit_has --tool codex-cli --action monitor --host chatgpt.com --method GET --path /backend-api/wham/config/bundle \
        --status 200 --field 'reason="side_call"'
    expect "Codex signed in with ChatGPT: workspace routing forwarded, monitor/side_call (GET /backend-api/wham/accounts/check)" \
        audit_has --tool codex-cli --action monitor --host chatgpt.com --method GET --path /backend-api/wham/accounts/check \
        --status 200 --field 'reason="side_call"'
    expect "Codex signed in with ChatGPT: the model call is blocked (/backend-api/codex/responses)" \
        audit_has --tool codex-cli --action block --host chatgpt.com --path /backend-api/codex/responses --status 400
    expect "Codex signed in with ChatGPT: the block and its link on one line" deny_line codex-chatgpt
    expect "Codex signed in with ChatGPT: vendor received no /backend-api/codex/responses" \
        bash -c '! python3 "$0" vendor "$1" --scenario codex-chatgpt --path /backend-api/codex/responses >/dev/null' "$HERE/check.py" "$OUT/vendor.log"
}
# Codex with a model_providers entry at a model API that aigate does not intercept but the AI host
# catalog lists (Mistral, group inference-apis): the call cannot be inspected, so its tunnel must
# be flagged as AI traffic outside inspection, never an anonymous not_vendor tunnel. (No network in
# the namespace: the tunnel's dial fails, which is fine; the record is what is checked.)
check_codexaihost() {
    have @openai/codex || { result SKIP "Codex CLI at a catalogued AI host" "not installed"; return; }
    PREP_HOME=codex_home_mistral client codex-mistral 30 HTTPS_PROXY=$PROXY CODEX_CA_CERTIFICATE=$CA \
        SSL_CERT_FILE=$CA MISTRAL_API_KEY=mistral-fake-000 -- codex exec --skip-git-repo-check "Say hi"
    expect "Codex at api.mistral.ai (catalogued, not intercepted): the tunnel is flagged ai_host=inference-apis" \
        audit_has --kind tunnel --host api.mistral.ai --field 'ai_host="inference-apis"' --field 'reason="ai_host"'
}
codex_home_mistral() {
    mkdir -p "$1/.codex" && cat >"$1/.codex/config.toml" <<'EOF'
model_provider = "mistral"
model = "devstral-medium"

[model_providers.mistral]
name = "Mistral"
base_url = "https://api.mistral.ai/v1"
env_key = "MISTRAL_API_KEY"
wire_api = "responses"
EOF
}
codex_home_openrouter() {
    mkdir -p "$1/.codex" && cat >"$1/.codex/config.toml" <<'EOF'
model_provider = "openrouter"
model = "openai/gpt-5"

[model_providers.openrouter]
name = "OpenRouter"
base_url = "https://openrouter.ai/api/v1"
env_key = "OPENROUTER_API_KEY"
wire_api = "responses"
EOF
}
codex_home_azure() {
    mkdir -p "$1/.codex" && cat >"$1/.codex/config.toml" <<'EOF'
model_provider = "azure"
model = "gpt-5"

[model_providers.azure]
name = "Azure OpenAI"
base_url = "https://aigate-check.openai.azure.com/openai"
env_key = "AZURE_OPENAI_API_KEY"
query_params = { api-version = "2025-04-01-preview" }
wire_api = "responses"
EOF
}
codex_home_chatgpt() { mkdir -p "$1/.codex" && python3 "$HERE/check.py" chatgpt-auth "$1/.codex/auth.json"; }
codex_home_docs() { mkdir -p "$1/.codex" && cp "$W/codex-docs.toml" "$1/.codex/config.toml"; }
codex_home_eval() { mkdir -p "$1/.codex" && cp "$W/codex-vendor-evaluation.toml" "$1/.codex/config.toml"; }
codex_user_home() { mkdir -p "$1/.codex" && echo 'model_provider = "openai"' >"$1/.codex/config.toml"; }

check_python() {
    [ -x "$W/venv/bin/python" ] && "$W/venv/bin/python" -c 'import anthropic, openai' 2>/dev/null ||
        { result SKIP "Python SDKs" "not installed"; return; }
    client py-anthropic 60 HTTPS_PROXY=$PROXY SSL_CERT_FILE=$CA ANTHROPIC_API_KEY=sk-ant-fake-000 -- "$W/venv/bin/python" -c '
import anthropic
c = anthropic.Anthropic(default_headers={"x-aigate-workflow": "docs"})
r = c.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=[{"role": "user", "content": "Say hi"}])
print(r.content[0].text)'
    expect "Python anthropic: exits 0" rc_is 0 py-anthropic
    expect "Python anthropic: audit tool=anthropic-sdk workflow=docs forwarded" \
        audit_has --tool anthropic-sdk --workflow docs --method POST --path /v1/messages --status 200
    expect "Python anthropic: vendor got /v1/messages without x-aigate-workflow" \
        vendor_has --scenario py-anthropic --path /v1/messages --header-absent x-aigate-workflow

    client py-openai 60 HTTPS_PROXY=$PROXY SSL_CERT_FILE=$CA OPENAI_API_KEY=sk-fake-000 -- "$W/venv/bin/python" -c '
import openai
c = openai.OpenAI(default_headers={"x-aigate-workflow": "docs"})
print(c.responses.create(model="gpt-5", input="Say hi").output_text)'
    expect "Python openai: exits 0" rc_is 0 py-openai
    expect "Python openai: audit tool=openai-sdk workflow=docs forwarded" \
        audit_has --tool openai-sdk --workflow docs --method POST --path /v1/responses --status 200
    expect "Python openai: vendor got /v1/responses without x-aigate-workflow" \
        vendor_has --scenario py-openai --path /v1/responses --header-absent x-aigate-workflow
}

check_node() {
    have @anthropic-ai/sdk && have openai && have undici || { result SKIP "Node SDKs" "not installed"; return; }
    # Node 20's fetch ignores HTTPS_PROXY: the SDKs get undici's fetch and a ProxyAgent.
    client node-anthropic 60 NODE_PATH="$W/npm/node_modules" NODE_EXTRA_CA_CERTS=$CA ANTHROPIC_API_KEY=sk-ant-fake-000 \
        AIGATE_PROXY=$PROXY -- node -e '
const Anthropic = require("@anthropic-ai/sdk").default;
const { fetch, ProxyAgent } = require("undici");
const c = new Anthropic({ fetch, fetchOptions: { dispatcher: new ProxyAgent(process.env.AIGATE_PROXY) },
                          defaultHeaders: { "x-aigate-workflow": "docs" } });
c.messages.create({ model: "claude-sonnet-4-5", max_tokens: 16, messages: [{ role: "user", content: "Say hi" }] })
 .then(r => console.log(r.content[0].text), e => { console.error(String(e)); process.exit(1); });'
    expect "Node @anthropic-ai/sdk: exits 0" rc_is 0 node-anthropic
    expect "Node @anthropic-ai/sdk: audit tool=anthropic-sdk workflow=docs forwarded" \
        audit_has --tool anthropic-sdk --workflow docs --method POST --path /v1/messages --status 200

    client node-openai 60 NODE_PATH="$W/npm/node_modules" NODE_EXTRA_CA_CERTS=$CA OPENAI_API_KEY=sk-fake-000 \
        AIGATE_PROXY=$PROXY -- node -e '
const OpenAI = require("openai").default;
const { fetch, ProxyAgent } = require("undici");
const c = new OpenAI({ fetch, fetchOptions: { dispatcher: new ProxyAgent(process.env.AIGATE_PROXY) },
                       defaultHeaders: { "x-aigate-workflow": "docs" } });
c.responses.create({ model: "gpt-5", input: "Say hi" })
 .then(r => console.log(r.output_text), e => { console.error(String(e)); process.exit(1); });'
    expect "Node openai: exits 0" rc_is 0 node-openai
    expect "Node openai: audit tool=openai-sdk workflow=docs forwarded" \
        audit_has --tool openai-sdk --workflow docs --method POST --path /v1/responses --status 200
}

check_gemini() {
    have @google/gemini-cli || { result SKIP "Gemini CLI" "not installed"; return; }
    local base=(HTTPS_PROXY=$PROXY NODE_EXTRA_CA_CERTS=$CA GEMINI_API_KEY=fake-gemini-key GEMINI_CLI_TRUST_WORKSPACE=true)
    client gemini-untagged 120 "${base[@]}" -- gemini -p "Say hi"
    expect "Gemini CLI untagged: exits 0" rc_is 0 gemini-untagged
    expect "Gemini CLI untagged: prints the vendor's answer" output_has gemini-untagged "hi from fake vendor"
    expect "Gemini CLI untagged: audit tool=gemini-cli workflow=untagged forwarded" \
        audit_has --tool gemini-cli --workflow untagged --method POST --path /v1beta/models/ --status 200
    expect "Gemini CLI untagged: no conflict (Gemini CLI is built on the Gen AI SDK)" \
        audit_has --tool gemini-cli --method POST --path /v1beta/models/ --field 'tool_conflicts=[]'

    client gemini-docs 120 "${base[@]}" "GEMINI_CLI_CUSTOM_HEADERS=x-aigate-workflow: docs" -- gemini -p "Say hi"
    expect "Gemini CLI tagged docs: exits 0" rc_is 0 gemini-docs
    expect "Gemini CLI tagged docs: audit tool=gemini-cli workflow=docs forwarded" \
        audit_has --tool gemini-cli --workflow docs --method POST --path /v1beta/models/ --status 200
    expect "Gemini CLI tagged docs: vendor got the call without x-aigate-workflow" \
        vendor_has --scenario gemini-docs --host generativelanguage.googleapis.com --header-absent x-aigate-workflow
}

check_copilot() {
    have @github/copilot || { result SKIP "Copilot CLI" "not installed"; return; }
    # api.github.com is tunnelled (not a vendor host) to the fake vendor: trust its CA as well.
    client copilot 120 HTTPS_PROXY=$PROXY NODE_EXTRA_CA_CERTS=$BUNDLE COPILOT_GITHUB_TOKEN=gho_fake000000000000000000000000000000 \
        COPILOT_AUTO_UPDATE=false -- copilot -p "Say hi" --allow-all-tools
    expect "Copilot CLI: exits 0" rc_is 0 copilot
    expect "Copilot CLI: prints the vendor's answer" output_has copilot "hi from fake vendor"
    expect "Copilot CLI: audit tool=copilot-cli POST /responses forwarded" \
        audit_has --tool copilot-cli --host api.githubcopilot.com --method POST --path /responses --status 200
}

# What the clients that the shipped policy forwards print when a rule blocks them (here: one on
# the user), in their vendor's format: Google's for Gemini, OpenAI's for Copilot.
check_blocked() {
    if have @google/gemini-cli; then
        client gemini-blocked 120 HTTPS_PROXY=$MALLORY_PROXY NODE_EXTRA_CA_CERTS=$CA GEMINI_API_KEY=fake-gemini-key \
            GEMINI_CLI_TRUST_WORKSPACE=true -- gemini -p "Say hi"
        expect "Gemini CLI blocked: exits by itself" not_timed_out
        expect "Gemini CLI blocked: the block and its link on one line" deny_line gemini-blocked
        expect "Gemini CLI blocked: audit tool=gemini-cli block, user mallory" \
            audit_has --tool gemini-cli --action block --method POST --path /v1beta/models/ --status 403 --field user=mallory
    else
        result SKIP "Gemini CLI blocked" "not installed"
    fi
    if have @github/copilot; then
        client copilot-blocked 120 HTTPS_PROXY=$MALLORY_PROXY NODE_EXTRA_CA_CERTS=$BUNDLE \
            COPILOT_GITHUB_TOKEN=gho_fake000000000000000000000000000000 COPILOT_AUTO_UPDATE=false \
            -- copilot -p "Say hi" --allow-all-tools
        expect "Copilot CLI blocked: exits by itself" not_timed_out
        # Copilot adds its own advice after any error on its model list (re-run /login, gh auth
        # status); the message above it is aigate's (docs/clients.md).
        expect "Copilot CLI blocked: the block and its link on one line" link_line copilot-blocked
        expect "Copilot CLI blocked: audit tool=copilot-cli block GET /models with 400 (deny_status), user mallory" \
            audit_has --tool copilot-cli --action block --host api.githubcopilot.com --method GET --path /models --status 400 --field user=mallory
    else
        result SKIP "Copilot CLI blocked" "not installed"
    fi
}

check_curl() {
    client curl-docs 30 -- curl -sS -x $PROXY --cacert "$CA" https://api.anthropic.com/v1/messages \
        -H 'x-aigate-workflow: docs' -H 'x-api-key: sk-ant-fake-000' -H 'anthropic-version: 2023-06-01' \
        -H 'content-type: application/json' \
        -d '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"Say hi"}]}'
    expect "curl tagged docs: exits 0" rc_is 0 curl-docs
    expect "curl tagged docs: audit workflow=docs POST /v1/messages forwarded" \
        audit_has --workflow docs --method POST --host api.anthropic.com --path /v1/messages --status 200
    expect "curl tagged docs: audit tool=unknown decided by policy.unknown_tool (monitor), user agent kept" \
        audit_has --tool unknown --action monitor --workflow docs --host api.anthropic.com --path /v1/messages \
        --field reason=unknown_tool --field "user_agent=$(curl --version | head -1 | cut -d' ' -f1-2 | tr ' ' /)"
    expect "curl tagged docs: vendor got /v1/messages without x-aigate-workflow" \
        vendor_has --scenario curl-docs --path /v1/messages --header-absent x-aigate-workflow
}

check_git() {
    command -v git >/dev/null || { result SKIP "git" "not installed"; return; }
    # github.com is no vendor host: aigate tunnels it (the fake vendor, trusted via http.sslCAInfo,
    # answers as github.com, so the TLS session is git's own, end to end).
    client git 30 -- git -c http.proxy=$PROXY -c http.sslCAInfo="$W/certs/upstream-ca.pem" \
        ls-remote https://github.com/example/repo.git
    expect "git: audit kind=tunnel github.com (not intercepted)" audit_has --kind tunnel --host github.com --action allow
    expect "git: the fake vendor saw git's own request through the tunnel" \
        vendor_has --scenario git --host github.com --path /info/refs
}

# Fleet rollout: the proxy, CA and tag come from the system-wide managed files, not the user.
check_managed() {
    [ -n "$ETC_OVERLAY" ] || { result SKIP "managed settings" "no overlay mount on /etc ($(head -1 "$W/etc/mount.err"))"; return; }
    if have @anthropic-ai/claude-code; then
        mkdir -p /etc/claude-code
        printf '{\n  "env": {\n    "HTTPS_PROXY": "%s",\n    "NODE_EXTRA_CA_CERTS": "%s",\n    "ANTHROPIC_CUSTOM_HEADERS": "x-aigate-workflow: vendor-evaluation"\n  }\n}\n' \
            "$EVE_PROXY" "$CA" >/etc/claude-code/managed-settings.json
        cp /etc/claude-code/managed-settings.json "$OUT/managed-settings.json"
        client claude-managed 120 ANTHROPIC_API_KEY=sk-ant-fake-000 -- claude -p "Say hi"
        rm -rf /etc/claude-code
        expect "Claude Code via /etc/claude-code/managed-settings.json only: exits 0" rc_is 0 claude-managed
        expect "Claude Code managed: audit tool=claude-code workflow=vendor-evaluation POST /v1/messages monitored" \
            audit_has --tool claude-code --action monitor --workflow vendor-evaluation --method POST --path /v1/messages --status 200
    else
        result SKIP "Claude Code managed settings" "not installed"
    fi
    if have @openai/codex; then
        mkdir -p /etc/codex
        cp "$W/codex-vendor-evaluation.toml" /etc/codex/managed_config.toml
        # The user's own config picks the built-in provider; the managed file must win.
        PREP_HOME=codex_user_home client codex-managed 180 HTTPS_PROXY=$EVE_PROXY CODEX_CA_CERTIFICATE=$CA \
            OPENAI_API_KEY=sk-fake-000 -- codex exec --skip-git-repo-check "Say hi"
        rm -rf /etc/codex
        expect "Codex via /etc/codex/managed_config.toml (over a user config.toml): exits 0" rc_is 0 codex-managed
        expect "Codex managed: audit tool=codex-cli workflow=vendor-evaluation POST /v1/responses monitored" \
            audit_has --tool codex-cli --action monitor --workflow vendor-evaluation --method POST --path /v1/responses --status 200
    else
        result SKIP "Codex managed config" "not installed"
    fi
}

inner() {
    OUT=$W/out
    AUDIT_JSON=$OUT/audit.json
    ip link set lo up || die "ip link set lo up failed"
    # A private /etc: an overlay (so the managed-settings checks can write /etc/claude-code and
    # /etc/codex), or else only a private /etc/hosts.
    rm -rf "$W/etc"
    mkdir -p "$W/etc/upper" "$W/etc/work"
    if mount -t overlay overlay -o "lowerdir=/etc,upperdir=$W/etc/upper,workdir=$W/etc/work" /etc 2>"$W/etc/mount.err"; then
        ETC_OVERLAY=1
        cp "$W/hosts" /etc/hosts || die "cannot write /etc/hosts in the overlay"
    else
        ETC_OVERLAY=
        mount --bind "$W/hosts" /etc/hosts || die "mount --bind $W/hosts /etc/hosts failed"
    fi
    rm -rf "$W/state" "$OUT" "$W/homes"
    mkdir -p "$OUT" "$W/state" "$W/homes"
    cp "$W/versions.txt" "$OUT/"

    python3 "$HERE/fake_vendor.py" --cert "$W/certs/vendor.pem" --key "$W/certs/vendor.key" \
        --log "$OUT/vendor.log" --port $VENDOR_PORT >"$OUT/fake_vendor.stdout" 2>&1 &
    local vpid=$!
    "$A" run --config "$W/aigate.toml" >"$OUT/aigate.stdout" 2>"$OUT/aigate.stderr" &
    local apid=$!
    trap 'kill $apid $vpid 2>/dev/null' EXIT
    local i
    for i in $(seq 100); do
        [ -f "$W/state/ca-cert.pem" ] && (exec 3<>/dev/tcp/127.0.0.1/3128) 2>/dev/null &&
            (exec 3<>/dev/tcp/127.0.0.1/$VENDOR_PORT) 2>/dev/null && break
        sleep 0.1
    done
    (exec 3<>/dev/tcp/127.0.0.1/3128) 2>/dev/null || { cat "$OUT/aigate.stderr" >&2; die "aigate did not start"; }
    CA=$W/state/ca-cert.pem
    EVE_PROXY=http://eve:$(tr -d '\n' <"$W/eve-token")@127.0.0.1:3128
    MALLORY_PROXY=http://mallory:$(tr -d '\n' <"$W/mallory-token")@127.0.0.1:3128
    FRANK_PROXY=http://frank:$(tr -d '\n' <"$W/frank-token")@127.0.0.1:3128
    BUNDLE=$OUT/ca-bundle.pem
    cat "$CA" "$W/certs/upstream-ca.pem" >"$BUNDLE"

    local c
    for c in claude loop codex codexroutes codexaihost python node gemini copilot blocked curl git managed; do
        want $c && check_$c
    done

    kill $apid $vpid 2>/dev/null
    wait $apid $vpid 2>/dev/null
    trap - EXIT
    SEQ0=0
    refresh_audit
    expect "aigate audit verify: hash chain intact" "$A" audit verify "$W/state/audit.jsonl"
    "$A" audit query "$W/state/audit.jsonl" >"$OUT/audit.txt" 2>&1
    if [ -n "$ETC_OVERLAY" ]; then umount /etc; else umount /etc/hosts; fi

    say ""
    say "results: $OUT/results.txt   audit: $AUDIT_JSON   vendor log: $OUT/vendor.log"
    say "$(grep -c '^PASS' "$OUT/results.txt") passed, $(grep -c '^FAIL' "$OUT/results.txt") failed, $(grep -c '^SKIP' "$OUT/results.txt") skipped"
    [ "$FAILS" = 0 ]
}

if [ "${1:-}" = --inner ]; then
    inner
    exit $?
fi
setup
export W A AIGATE_CLIENTS_ONLY
exec unshare -n -m -- bash "$HERE/run.sh" --inner
