#!/usr/bin/env python3
"""Render the bench config for aigate from the shipped config/aigate.toml.

Everything in the shipped file (default policy, tools, rules, identification, hash-chained audit log
with fsync = "batch", timeouts, limits) is kept as it is, comments included. Only these keys change:

  [gateway]  listen, state_dir, max_connections_per_client (see --per-client),
             allowed_destinations = ["<vendor host>:443"] (the bench vendor is on loopback through
             /etc/hosts, an internal destination aigate refuses unless config opens it)
  [ca]       cert, key            (the harness's MITM CA)
  [upstream] extra_roots          (the harness's upstream root CA)
  [admin]    listen
  [log]      level = "warn"       (process logs; not the audit log)
  [provenance] enabled            (only with --provenance on|off)
  [provenance] worker_priority    (only with --worker-priority normal|low)
  + one [[vendors]] entry for the bench vendor host api.vendor.test (error_format anthropic), so the
    bench traffic is intercepted, identified, decided and audited like a real vendor's.
    With --vendor-host-in ID the host is instead added to the hosts of the shipped vendor ID
    (e.g. anthropic, so the shipped tool signatures and rules for that vendor apply to it: the soak
    test's Claude Code requests are blocked by the shipped rule).
  [upstream.resolve]  + one entry per --resolve HOST=IP:PORT (e.g. a non-vendor host for tunnels)

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
ap.add_argument("--vendor-host-in", metavar="ID",
                help="add --vendor-host to the hosts of the shipped [[vendors]] entry with this id "
                     "(e.g. anthropic) instead of adding a separate bench vendor")
ap.add_argument("--resolve", action="append", default=[], metavar="HOST=IP:PORT",
                help="an [upstream.resolve] entry (repeatable)")
ap.add_argument("--provenance", choices=["on", "off"],
                help="set provenance.enabled (capture of vendor output; shipped: on), for "
                     "bench/capture.sh and callgrind.sh --provenance")
ap.add_argument("--worker-priority", choices=["normal", "low"],
                help="set provenance.worker_priority (shipped: normal), for bench/capture.sh")
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
    ("gateway", "allowed_destinations"): "[" + q(a.vendor_host + ":443") + "]",
}
if a.provenance:
    sets[("provenance", "enabled")] = "true" if a.provenance == "on" else "false"
if a.worker_priority:
    sets[("provenance", "worker_priority")] = q(a.worker_priority)
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

# [upstream.resolve] entries: quoted keys, right after the section header (or a new section).
resolve = {}
for item in a.resolve:
    host, sep, addr = item.partition("=")
    if not sep or not host or not addr:
        sys.exit(f"render-config: --resolve wants HOST=IP:PORT, got {item!r}")
    if host in base.get("upstream", {}).get("resolve", {}):
        sys.exit(f"render-config: {host} is already in [upstream.resolve] of {a.base}")
    resolve[host] = addr
if resolve:
    lines = [f"{q(h)} = {q(v)}   # bench" for h, v in resolve.items()]
    if "upstream.resolve" in header_at:
        at = header_at["upstream.resolve"]
        out[at:at] = lines
        # header_at indices after this point move by len(lines)
        header_at = {k: (i + len(lines) if i > at else i) for k, i in header_at.items()}
    else:
        out += ["", "[upstream.resolve]"] + lines

# --vendor-host-in: append the host to that vendor's `hosts = [...]` line (one line in the shipped file).
if a.vendor_host_in:
    starts = [i for i, line in enumerate(out) if re.match(r"^\s*\[\[\s*vendors\s*\]\]", line)]
    edited = False
    for i in starts:
        j = i + 1
        while j < len(out) and not hdr.match(out[j]):
            j += 1
        block = tomllib.loads("\n".join(out[i + 1:j]))
        if block.get("id") != a.vendor_host_in:
            continue
        for k in range(i + 1, j):
            if re.match(r"^\s*hosts\s*=", out[k]):
                was = out[k].split("=", 1)[1].strip()
                hosts = tomllib.loads(f"x = {was}")["x"]  # fails if the array spans several lines
                out[k] = "hosts = [" + ", ".join(q(h) for h in hosts + [a.vendor_host]) + f"]   # bench: was {was}"
                edited = True
                break
        break
    if not edited:
        sys.exit(f"render-config: no [[vendors]] entry with id = {a.vendor_host_in!r} and a one-line hosts in {a.base}")

# Missing keys: insert after the section header (in reverse so indices stay valid); missing sections: append.
missing = [k for k in sets if k not in done]
for key in sorted((k for k in reversed(missing) if k[0] in header_at), key=lambda k: -header_at[k[0]]):
    out.insert(header_at[key[0]], f"{key[1]} = {sets[key]}   # bench")
for key in (k for k in missing if k[0] not in header_at):
    out += ["", f"[{key[0]}]", f"{key[1]} = {sets[key]}   # bench"]

if not a.vendor_host_in:
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
if not rendered.endswith("\n"):
    rendered += "\n"

# Check: the changed keys have the new values, nothing else moved.
got = tomllib.loads(rendered)
for (s, k), v in sets.items():
    want = tomllib.loads(f"x = {v}")["x"]
    if got[s][k] != want:
        sys.exit(f"render-config: {s}.{k} is {got[s][k]!r}, wanted {want!r}")
if a.vendor_host_in:
    want_vendors = [dict(v, hosts=v["hosts"] + [a.vendor_host]) if v["id"] == a.vendor_host_in else v
                    for v in base["vendors"]]
    assert got["vendors"] == want_vendors, "vendors: only the bench host may be added"
else:
    vt = [v for v in got["vendors"] if v["id"] == "vendor-test"]
    assert len(vt) == 1 and vt[0]["hosts"] == [a.vendor_host], vt
    assert got["vendors"][:-1] == base["vendors"], "shipped vendors changed"
want_resolve = dict(base.get("upstream", {}).get("resolve", {}), **resolve)
assert got["upstream"].get("resolve", {}) == want_resolve, (got["upstream"].get("resolve"), want_resolve)
for s in got:
    if s == "vendors":
        continue
    for k in set(got[s]) | set(base.get(s, {})) if isinstance(got[s], dict) else []:
        if (s, k) not in sets and (s, k) != ("upstream", "resolve"):
            assert got[s].get(k) == base.get(s, {}).get(k), f"{s}.{k} changed"
    if not isinstance(got[s], dict):
        assert got[s] == base[s], f"{s} changed"

with open(a.out, "w", encoding="utf-8") as f:
    f.write(rendered)
