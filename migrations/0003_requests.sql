-- aigate schema 3: exemption requests and their drafts (request links), shared by every replica
-- (issue 16). `body` is the request or draft as the admin API shows it.

-- One row per request. The partial unique index is "one open request per user, tool and
-- workflow", for every replica at once.
CREATE TABLE aigate_requests (
    id          text PRIMARY KEY,
    body        jsonb NOT NULL,
    user_id     text NOT NULL,
    tool        text NOT NULL,
    workflow    text NOT NULL,
    state       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX aigate_requests_one_open ON aigate_requests (user_id, tool, workflow)
    WHERE state = 'open';
CREATE INDEX aigate_requests_due ON aigate_requests (expires_at) WHERE state = 'open';

-- Request links from deny messages, written off the data path so any replica can open them.
CREATE TABLE aigate_request_drafts (
    id          text PRIMARY KEY,
    body        jsonb NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX aigate_request_drafts_expires_at ON aigate_request_drafts (expires_at);
