#!/usr/bin/env python3
"""Check deploy/grafana/aigate-dashboard.json.

- valid JSON with the shape Grafana imports (schemaVersion, uid, a Prometheus datasource
  variable, unique panel ids and refIds, panels inside the 24-column grid, not overlapping);
- every PromQL expression parses (promql_parser, when installed; else a bracket check) and
  selects only aigate's metrics, with only aigate's labels and label values;
- with --exposition FILE (the text of a real GET /metrics): every metric the dashboard uses is
  one the binary exposes.

usage: check_dashboard.py DASHBOARD.json [--exposition FILE]
Prints one line per problem; exit 1 if there are any.
"""

import json
import re
import sys

# The metrics aigate exposes (docs/admin-api.md, src/metrics.rs), histograms as their series.
METRICS = {
    "aigate_requests_total",
    "aigate_request_duration_seconds_bucket",
    "aigate_request_duration_seconds_sum",
    "aigate_request_duration_seconds_count",
    "aigate_open_connections",
    "aigate_exemptions_active",
    "aigate_audit_write_errors_total",
    "aigate_audit_records_dropped_total",
    "aigate_audit_healthy",
}
# Labels aigate sets, plus le (histogram buckets) and the ones Prometheus adds at scrape time.
LABELS = {"kind", "vendor", "tool", "action", "reason", "le", "instance", "job"}
VALUES = {"action": {"allow", "monitor", "block"}, "kind": {"request", "tunnel", "admin"}}
# Grafana's variables, replaced by something PromQL accepts before parsing.
GRAFANA_VARS = [
    (r"\$__rate_interval|\$\{__rate_interval\}", "5m"),
    (r"\$__interval|\$\{__interval\}", "1m"),
    (r"\$__range|\$\{__range\}", "6h"),
    (r"\$\{?instance\}?", ".*"),
]

problems = []


def need(cond, msg):
    if not cond:
        problems.append(msg)
    return cond


def substitute(expr):
    for pat, repl in GRAFANA_VARS:
        expr = re.sub(pat, repl, expr)
    return expr


def walk(node, found):
    """Collect (metric name, matchers) of every selector and every by/without label."""
    kind = type(node).__name__
    if kind == "VectorSelector":
        matchers = [(m.name, m.op, m.value) for m in node.matchers.matchers]
        found["selectors"].append((node.name, matchers))
        return
    if kind == "MatrixSelector":
        return walk(node.vector_selector, found)
    if kind == "AggregateExpr":
        if node.modifier is not None:
            found["grouping"].extend(node.modifier.labels)
        walk(node.expr, found)
        if node.param is not None:
            walk(node.param, found)
        return
    if kind == "BinaryExpr":
        walk(node.lhs, found)
        walk(node.rhs, found)
        return
    if kind == "Call":
        for a in node.args:
            walk(a, found)
        return
    if hasattr(node, "expr"):  # ParenExpr, UnaryExpr, SubqueryExpr
        walk(node.expr, found)


def analyse(expr):
    """Selectors and grouping labels of expr: with the real parser if there is one."""
    found = {"selectors": [], "grouping": []}
    try:
        import promql_parser
    except ImportError:
        promql_parser = None
    if promql_parser is not None:
        walk(promql_parser.parse(expr), found)
        return found, "promql_parser"
    # Fallback: balanced brackets, names before { or [, matchers inside {}, by/without lists.
    depth = 0
    for ch in re.sub(r'"(\\.|[^"\\])*"', '""', expr):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0:
            raise ValueError("unbalanced brackets")
    if depth:
        raise ValueError("unbalanced brackets")
    for name, body in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr):
        matchers = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"', body)
        found["selectors"].append((name, matchers))
    seen = {n for n, _ in found["selectors"]}
    for name in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\[", expr) + re.findall(r"\b(aigate_[a-zA-Z0-9_:]*)", expr):
        if name not in seen:
            found["selectors"].append((name, []))
            seen.add(name)
    for lst in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        found["grouping"].extend(x.strip() for x in lst.split(",") if x.strip())
    return found, "regex fallback"


def exposed_metrics(path):
    """Series names a /metrics text exposes; a histogram family yields _bucket/_sum/_count."""
    names = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"# TYPE (\S+) (\S+)", line)
            if m:
                if m.group(2) == "histogram":
                    names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
                else:
                    names.add(m.group(1))
            elif line.strip() and not line.startswith("#"):
                names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


def main():
    args = sys.argv[1:]
    exposition = None
    if "--exposition" in args:
        i = args.index("--exposition")
        exposition = args[i + 1]
        del args[i:i + 2]
    with open(args[0], encoding="utf-8") as f:
        try:
            dash = json.load(f)
        except json.JSONDecodeError as e:
            problems.append(f"not valid JSON: {e}")
            return

    need(isinstance(dash.get("schemaVersion"), int) and 36 <= dash["schemaVersion"] <= 41,
         f"schemaVersion {dash.get('schemaVersion')} is not a Grafana 10/11 schema (36..41)")
    need(bool(dash.get("uid")) and bool(dash.get("title")), "dashboard needs a uid and a title")
    need(dash.get("id") is None, "dashboard id must be null for import")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    need(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
         "no Prometheus datasource variable named datasource")

    used = set()
    ids, cells = set(), set()
    exprs = []
    for v in variables.values():
        if v.get("type") == "query":
            q = v.get("query")
            exprs.append((f"variable {v['name']}", q.get("query") if isinstance(q, dict) else q))
    for p in dash.get("panels", []):
        title = p.get("title", "?")
        need(p.get("id") not in ids, f"panel {title}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if need(all(isinstance(g.get(k), int) for k in "xywh"), f"panel {title}: gridPos incomplete"):
            need(g["x"] >= 0 and g["x"] + g["w"] <= 24, f"panel {title}: outside the 24-column grid")
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    need((x, y) not in cells, f"panel {title}: overlaps another panel at {x},{y}")
                    cells.add((x, y))
        if p.get("type") == "row":
            continue
        need(p.get("datasource", {}).get("uid") == "${datasource}", f"panel {title}: datasource is not ${{datasource}}")
        targets = p.get("targets", [])
        need(targets, f"panel {title}: no queries")
        refs = [t.get("refId") for t in targets]
        need(len(refs) == len(set(refs)), f"panel {title}: duplicate refId")
        for t in targets:
            need(t.get("datasource", {}).get("uid") == "${datasource}", f"panel {title}: target datasource")
            exprs.append((f"panel {title}", t.get("expr", "")))

    parser = None
    for where, expr in exprs:
        if not need(bool(expr), f"{where}: empty expression"):
            continue
        if expr.startswith("label_values("):
            m = re.fullmatch(r"label_values\((\w+)\s*,\s*(\w+)\)", expr)
            if need(m is not None, f"{where}: cannot read {expr}"):
                need(m.group(1) in METRICS, f"{where}: unknown metric {m.group(1)}")
                used.add(m.group(1))
                need(m.group(2) in LABELS, f"{where}: unknown label {m.group(2)}")
            continue
        try:
            found, parser = analyse(substitute(expr))
        except Exception as e:  # noqa: BLE001 - any parse error is a finding
            problems.append(f"{where}: does not parse: {e}: {expr}")
            continue
        need(found["selectors"], f"{where}: selects no metric: {expr}")
        for name, matchers in found["selectors"]:
            need(name in METRICS, f"{where}: unknown metric {name!r}")
            used.add(name)
            for label, op, value in matchers:
                need(label in LABELS, f"{where}: unknown label {label!r} on {name}")
                if label in VALUES and str(op) in ("=", "MatchOp.Equal", "Equal"):
                    need(value in VALUES[label], f"{where}: {label}={value!r} is never set by aigate")
        for label in found["grouping"]:
            need(label in LABELS, f"{where}: groups by unknown label {label!r}")

    wanted = {"aigate_requests_total", "aigate_request_duration_seconds_bucket", "aigate_open_connections",
              "aigate_exemptions_active", "aigate_audit_write_errors_total", "aigate_audit_healthy"}
    need(wanted <= used, f"dashboard does not show {sorted(wanted - used)}")
    if exposition:
        exposed = exposed_metrics(exposition)
        need(used <= exposed, f"the binary's /metrics does not expose {sorted(used - exposed)}")
    print(f"  {len(exprs)} expressions, {len(used)} metrics, parsed with {parser or 'n/a'}"
          + (", checked against a live /metrics" if exposition else ""))


if __name__ == "__main__":
    main()
    for p in problems:
        print(f"  problem: {p}")
    sys.exit(1 if problems else 0)
