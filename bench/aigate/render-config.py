#!/usr/bin/env python3
"""Render the bench config for aigate from the shipped config/aigate.toml.

Everything in the shipped file (default policy, tools, rules, identification, hash-chained audit log
with fsync = "batch", timeouts, limits) is kept as it is, comments included. Only these keys change:

  [gateway]  listen, state_dir, max_connections_per_client (see --per-client)
  [ca]       cert, key            (the harness's MITM CA)
  [upstream] extra_roots          (the harness's upstream root CA)
  [admin]    listen
  [log]      level = "warn"       (process logs; not the audit log)
  + one [[vendors]] entry for the bench vendor host api.vendor.test (error_format anthropic), so the
    bench traffic is intercepted, identified, decided and audited like a real vendor's.

The result is parsed back with tomllib and every changed key is checked; `aigate check` validates it
afterwards (start.sh). Stdlib only.
"""
import argparse
import json
import re
import sys
import tomllib

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--base", required=True, help="shipped config (config/aigate.toml)")
ap.add_argument("--out", required=True)
ap.add_argument("--listen", required=True, help="ip:port for [gateway] listen")
ap.add_argument("--state-dir", required=True)
ap.add_argument("--ca-cert", required=True)
ap.add_argument("--ca-key", required=True)
ap.add_argument("--upstream-ca", required=True)
ap.add_argument("--admin-listen", default="127.0.0.1:9181")
ap.add_argument("--log-level", default="warn")
ap.add_argument("--per-client", default="max",
                help='gateway.max_connections_per_client: a number, "max" (= max_connections; default) '
                     'or "keep" (the shipped value)')
ap.add_argument("--vendor-host", default="api.vendor.test")
a = ap.parse_args()

text = open(a.base, encoding="utf-8").read()
base = tomllib.loads(text)
q = json.dumps  # a TOML basic string is a JSON string for these values (paths, addresses)

sets = {
    ("gateway", "listen"): q(a.listen),
    ("gateway", "state_dir"): q(a.state_dir),
    ("ca", "cert"): q(a.ca_cert),
    ("ca", "key"): q(a.ca_key),
    ("upstream", "extra_roots"): "[" + q(a.upstream_ca) + "]",
    ("admin", "listen"): q(a.admin_listen),
    ("log", "level"): q(a.log_level),
}
if a.per_client != "keep":
    n = base.get("gateway", {}).get("max_connections", 16000) if a.per_client == "max" else int(a.per_client)
    sets[("gateway", "max_connections_per_client")] = str(n)

# Section-aware line edit: replace `key = ...` inside [section]; a key that is absent (or only present
# as a comment) is added right after the section header.
out, section, done, header_at = [], None, set(), {}
hdr = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-]+)\s*\]\]?\s*(#.*)?$")
for line in text.splitlines():
    m = hdr.match(line)
    if m:
        section = m.group(1)
        out.append(line)
        header_at.setdefault(section, len(out))  # index just after the first header of the section
        continue
    km = re.match(r"^\s*([A-Za-z0-9_\-]+)\s*=", line)
    if km and (section, km.group(1)) in sets and (section, km.group(1)) not in done:
        key = (section, km.group(1))
        out.append(f"{key[1]} = {sets[key]}   # bench: was {line.split('=', 1)[1].strip()}")
        done.add(key)
        continue
    out.append(line)

# Missing keys: insert after the section header (in reverse so indices stay valid); missing sections: append.
missing = [k for k in sets if k not in done]
for key in sorted((k for k in reversed(missing) if k[0] in header_at), key=lambda k: -header_at[k[0]]):
    out.insert(header_at[key[0]], f"{key[1]} = {sets[key]}   # bench")
for key in (k for k in missing if k[0] not in header_at):
    out += ["", f"[{key[0]}]", f"{key[1]} = {sets[key]}   # bench"]

out += [
    "",
    "# ---------------------------------------------------------------------------------------------",
    "# bench: the benchmark's vendor host, handled exactly like a real vendor's.",
    "[[vendors]]",
    'id = "vendor-test"',
    'name = "Bench vendor"',
    f"hosts = [{q(a.vendor_host)}]",
    'error_format = "anthropic"',
    "",
]
rendered = "\n".join(out)

# Check: the changed keys have the new values, nothing else moved.
got = tomllib.loads(rendered)
for (s, k), v in sets.items():
    want = tomllib.loads(f"x = {v}")["x"]
    if got[s][k] != want:
        sys.exit(f"render-config: {s}.{k} is {got[s][k]!r}, wanted {want!r}")
vt = [v for v in got["vendors"] if v["id"] == "vendor-test"]
assert len(vt) == 1 and vt[0]["hosts"] == [a.vendor_host], vt
for s in got:
    if s == "vendors":
        assert got[s][:-1] == base[s], "shipped vendors changed"
        continue
    for k in set(got[s]) | set(base.get(s, {})) if isinstance(got[s], dict) else []:
        if (s, k) not in sets:
            assert got[s].get(k) == base.get(s, {}).get(k), f"{s}.{k} changed"
    if not isinstance(got[s], dict):
        assert got[s] == base[s], f"{s} changed"

with open(a.out, "w", encoding="utf-8") as f:
    f.write(rendered)
