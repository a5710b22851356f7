#!/usr/bin/env python3
"""Assertions for tests/clients/run.sh over aigate's audit records and the fake vendor's log.

    check.py audit  QUERY_JSON --after SEQ [--kind K] [--tool T] [--action A] [--method M]
                    [--path P] [--host H] [--workflow W] [--status N] [--field NAME=JSON]...
        QUERY_JSON is the output of `aigate audit query FILE --format json` (one record per line).
        Exit 0 when at least one record with seq > SEQ matches every condition given (--path is a
        prefix of the path without its query string; --field compares a record field with a JSON
        value, or with a string when the value is not JSON); otherwise exit 1 and print what was
        there. --at-most N: instead, exit 0 when at most N records match (none too).

    check.py vendor LOG --scenario NAME [--host H] [--path P] [--method M] [--header-absent NAME]
        Exit 0 when the vendor received at least one matching request during the scenario (between
        its marker line and the next) and, with --header-absent, no request of the scenario carried
        that header.

    check.py chatgpt-auth FILE       write a Codex auth.json for a fake ChatGPT sign-in (unsigned
                                     JWTs: Codex reads their claims, only OpenAI checks them)
    check.py lastseq QUERY_JSON      print the highest seq (0 for an empty log)
    check.py mark LOG NAME           append a scenario marker to the vendor log
"""
import base64
import json
import sys
import time
from argparse import ArgumentParser


def records(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out


def brief(r):
    if r.get("kind") != "request":
        return f"  seq={r.get('seq')} {r.get('kind')} {r.get('host')} {r.get('action')} {r.get('reason')} {r.get('error') or ''}"
    return (f"  seq={r.get('seq')} tool={r.get('tool')} action={r.get('action')} {r.get('method')} "
            f"{r.get('host')}{r.get('path')} status={r.get('status')} workflow={r.get('workflow')} "
            f"user={r.get('user')} conflicts={r.get('tool_conflicts')} claimed={r.get('workflow_claimed')}")


def audit(a):
    recs = [r for r in records(a.file) if int(r.get("seq", 0)) > a.after]
    want = {"kind": a.kind, "tool": a.tool, "action": a.action, "method": a.method, "host": a.host,
            "workflow": a.workflow}

    def ok(r):
        for k, v in want.items():
            if v is not None and str(r.get(k)) != v:
                return False
        if a.status is not None and r.get("status") != a.status:
            return False
        if a.path is not None and not (r.get("path") or "").split("?")[0].startswith(a.path):
            return False
        for f in a.field or []:
            name, _, raw = f.partition("=")
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            if r.get(name) != value:
                return False
        return True

    hits = [r for r in recs if ok(r)]
    if a.at_most is not None:
        print(f"  {len(hits)} matching record(s), at most {a.at_most} wanted")
        for r in hits[:20]:
            print(brief(r))
        return 0 if len(hits) <= a.at_most else 1
    if hits:
        print(f"  {len(hits)} matching record(s), e.g.{brief(hits[0]).lstrip()}")
        return 0
    print(f"  no matching record among {len(recs)} new record(s):")
    for r in recs[:40]:
        print(brief(r))
    return 1


def vendor(a):
    reqs, on = [], False
    for r in records(a.file):
        if "marker" in r:
            on = r["marker"] == a.scenario
            continue
        if on:
            reqs.append(r)
    if a.header_absent:
        bad = [r for r in reqs if any(k.lower() == a.header_absent.lower() for k, _ in r["headers"])]
        if bad:
            print(f"  {len(bad)} request(s) reached the vendor with {a.header_absent}, e.g. "
                  f"{bad[0]['method']} {bad[0]['host']}{bad[0]['path']}")
            return 1

    def ok(r):
        return ((a.host is None or r["host"] == a.host) and (a.method is None or r["method"] == a.method)
                and (a.path is None or r["path"].split("?")[0].endswith(a.path)))

    hits = [r for r in reqs if ok(r)]
    if hits:
        print(f"  vendor received {len(hits)} matching request(s) of {len(reqs)}")
        return 0
    print(f"  vendor received no matching request; it saw {len(reqs)}:")
    for r in reqs[:20]:
        print(f"  {r['method']} {r['host']}{r['path']}")
    return 1


def chatgpt_auth(path):
    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    def jwt(claims):
        return b64({"alg": "RS256", "typ": "JWT"}) + "." + b64(claims) + ".ZmFrZQ"

    now = int(time.time())
    auth = {"https://api.openai.com/auth": {"chatgpt_plan_type": "business", "chatgpt_account_id": "acct-fake",
                                            "chatgpt_user_id": "user-fake", "user_id": "user-fake"}}
    common = dict(auth, exp=now + 30 * 86400, iat=now, iss="https://auth.openai.com", sub="user-fake")
    tokens = {"id_token": jwt(dict(common, email="dev@example.com", aud="app_fake")),
              "access_token": jwt(dict(common, aud=["https://api.openai.com/v1"], client_id="app_fake")),
              "refresh_token": "rt_fake", "account_id": "acct-fake"}
    with open(path, "w") as f:
        json.dump({"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": tokens,
                   "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f)
    return 0


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "chatgpt-auth":
        return chatgpt_auth(sys.argv[2])
    if len(sys.argv) > 1 and sys.argv[1] == "lastseq":
        print(max([int(r.get("seq", 0)) for r in records(sys.argv[2])] or [0]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "mark":
        with open(sys.argv[2], "a") as f:
            f.write(json.dumps({"marker": sys.argv[3], "t": time.time()}) + "\n")
        return 0
    p = ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    pa = sub.add_parser("audit")
    pa.add_argument("file")
    pa.add_argument("--after", type=int, default=0)
    for k in ("kind", "tool", "action", "method", "path", "host", "workflow"):
        pa.add_argument("--" + k)
    pa.add_argument("--status", type=int)
    pa.add_argument("--at-most", type=int)
    pa.add_argument("--field", action="append")
    pv = sub.add_parser("vendor")
    pv.add_argument("file")
    pv.add_argument("--scenario", required=True)
    for k in ("host", "path", "method", "header-absent"):
        pv.add_argument("--" + k)
    a = p.parse_args()
    return audit(a) if a.cmd == "audit" else vendor(a)


if __name__ == "__main__":
    sys.exit(main())
