#!/usr/bin/env bash
# Grant propagation between two replicas sharing PostgreSQL (issue #7's figure): starts a
# throwaway PostgreSQL cluster, runs examples/grant_propagation.rs (release) against it, stops
# the cluster. Needs Debian's postgresql package.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/pg.sh
trap pg_stop EXIT
pg_start
cargo run --quiet --release --example grant_propagation -- --url "$PG_URL" --grants "${GRANTS:-100}"
