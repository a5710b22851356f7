-- aigate schema 2: console sessions and one-time sign-in links, shared by every replica so that
-- any replica behind the load balancer serves any page. `key` is the SHA-256 of the secret the
-- browser holds (never the secret); `body` is the session or grant as JSON.
CREATE TABLE aigate_console_sessions (
    key         text PRIMARY KEY,
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL
);
CREATE INDEX aigate_console_sessions_last_seen ON aigate_console_sessions (last_seen);

CREATE TABLE aigate_console_once (
    key         text PRIMARY KEY,
    body        jsonb NOT NULL,
    expires_at  timestamptz NOT NULL
);
