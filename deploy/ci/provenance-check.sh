#!/bin/sh
# Pull-request check: fail the job when the change adds model output that came back from an AI
# vendor through the gateway (docs/provenance.md, "CI check").
#
#   deploy/ci/provenance-check.sh [BASE [HEAD]]
#
# Scans only the lines HEAD adds since it left BASE (`aigate provenance scan --git-rev-range
# MERGE_BASE..HEAD`), so findings already on the base branch do not fail a new change. Prints the
# findings as a table. Exit 0 nothing found, 3 findings (the job fails), anything else: the
# scan could not run (the job fails too: a check that did not run did not pass).
#
# BASE   default: $AIGATE_BASE_REF, else origin/$GITHUB_BASE_REF (GitHub Actions), else
#        origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME (GitLab), else origin/main
# HEAD   default: HEAD
#
# Environment:
#   AIGATE          the aigate binary (default: aigate on PATH)
#   AIGATE_CONFIG   a config whose state directory holds the gateway's fingerprint key
#                   (<state_dir>/provenance/key, from your secret store); storage.backend =
#                   "postgres" reads the shared ledger directly
#   AIGATE_ADMIN, AIGATE_TOKEN  the gateway's admin API and an auditor token, for the embedded
#                   ledger (the runner has no ledger file of its own)
#   AIGATE_REPO     the repository (default: the current directory)
#   AIGATE_SARIF    also write SARIF 2.1.0 to this file, for code-scanning upload
#   AIGATE_RECORD   "1": queue the findings for review (scan --record)
#   AIGATE_MIN_CHARS  the threshold (default 200)
set -u

aigate=${AIGATE:-aigate}
repo=${AIGATE_REPO:-.}
if [ -n "${AIGATE_BASE_REF:-}" ]; then
    default_base=$AIGATE_BASE_REF
elif [ -n "${GITHUB_BASE_REF:-}" ]; then
    default_base=origin/$GITHUB_BASE_REF
elif [ -n "${CI_MERGE_REQUEST_TARGET_BRANCH_NAME:-}" ]; then
    default_base=origin/$CI_MERGE_REQUEST_TARGET_BRANCH_NAME
else
    default_base=origin/main
fi
base=${1:-$default_base}
head=${2:-HEAD}

if ! merge_base=$(git -C "$repo" merge-base "$base" "$head" 2>&1); then
    echo "provenance-check: no common ancestor of $base and $head in $repo: $merge_base" >&2
    echo "provenance-check: fetch the base branch (actions/checkout: fetch-depth: 0) or pass BASE" >&2
    exit 64
fi
range=$merge_base..$head

set -- provenance scan --git-rev-range "$range" --min-chars "${AIGATE_MIN_CHARS:-200}"
if [ "${AIGATE_RECORD:-}" = 1 ]; then
    set -- "$@" --record
fi

echo "provenance-check: scanning what $head adds to $base ($range)"
"$aigate" "$@" "$repo"
rc=$?
if [ -n "${AIGATE_SARIF:-}" ] && { [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]; }; then
    # The table above is for people; the SARIF file is for the code-scanning upload.
    "$aigate" provenance scan --git-rev-range "$range" --min-chars "${AIGATE_MIN_CHARS:-200}" \
        --format sarif "$repo" >"$AIGATE_SARIF" 2>/dev/null
    sarif_rc=$?
    if [ "$sarif_rc" -ne 0 ] && [ "$sarif_rc" -ne 3 ]; then
        echo "provenance-check: writing SARIF to $AIGATE_SARIF failed (exit $sarif_rc)" >&2
        rc=$sarif_rc
    fi
fi
case $rc in
0)
    echo "provenance-check: passed, no captured model output in $range"
    ;;
3)
    echo "provenance-check: FAILED: this change adds model output captured by the gateway (above)." >&2
    echo "provenance-check: remove or rewrite it; if it is a false positive, ask security to clear it" >&2
    echo "provenance-check: (aigate provenance findings; docs/provenance.md, \"Review\")." >&2
    ;;
*)
    echo "provenance-check: the scan could not run (exit $rc); the check did not pass" >&2
    ;;
esac
exit "$rc"
