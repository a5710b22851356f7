-- aigate schema 5: what was still per replica (issues 16 and 17).

-- OIDC sign-ins started and not yet finished: a sign-in started through one replica may come
-- back from the provider through another. `key` is the SHA-256 of the `state` parameter;
-- `body` holds the PKCE verifier, the nonce, the SHA-256 of the browser's binding cookie and
-- where to go next. Rows live at most 10 minutes (console/oidc_pending.rs deletes older ones).
CREATE TABLE aigate_oidc_pending (
    key         text PRIMARY KEY,
    body        jsonb NOT NULL,
    source      text NOT NULL,
    started_at  timestamptz NOT NULL
);
CREATE INDEX aigate_oidc_pending_started_at ON aigate_oidc_pending (started_at);
CREATE INDEX aigate_oidc_pending_source ON aigate_oidc_pending (source);

-- The provenance review queue (docs/provenance.md, "Review"). `id` is a UUIDv7, so its order
-- is the order of recording; `body` is the finding as the admin API shows it. The partial
-- unique index is "one open finding per key" for every replica at once.
CREATE TABLE aigate_findings (
    id      text PRIMARY KEY,
    key     text NOT NULL,
    status  text NOT NULL,
    body    jsonb NOT NULL
);
CREATE UNIQUE INDEX aigate_findings_one_open ON aigate_findings (key) WHERE status = 'open';
CREATE INDEX aigate_findings_by_key ON aigate_findings (key, id);
