-- aigate schema 1: exemptions shared by every replica, and the audit table.
-- Applied by `aigate db migrate` or on start, once, under an advisory lock.

-- One row per exemption; `body` is the exemption as the admin API shows it.
CREATE TABLE aigate_exemptions (
    id          text PRIMARY KEY,
    body        jsonb NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX aigate_exemptions_expires_at ON aigate_exemptions (expires_at);

-- Every replica's audit records, each replica its own hash chain (`replica`, `seq`).
-- `line` is the sealed record exactly as in the replica's file, so `aigate audit verify`
-- checks the same hashes. Partitioned by day; the shipper creates each day's partition.
-- `pos` orders rows across replicas as they arrive (the admin API's newest-first cursor).
CREATE TABLE aigate_audit (
    pos      bigserial NOT NULL,
    replica  text NOT NULL,
    seq      bigint NOT NULL,
    time     timestamptz NOT NULL,
    line     text NOT NULL,
    PRIMARY KEY (replica, seq, time)
) PARTITION BY RANGE (time);
CREATE INDEX aigate_audit_pos ON aigate_audit (pos DESC);
