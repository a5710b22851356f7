-- aigate schema 4: the provenance ledger shared by every replica (docs/provenance.md).
-- Fingerprints (keyed hashes) of what vendors sent back, never the text. Both tables are
-- partitioned by day of the call's start, like aigate_audit: the writer creates each day's
-- partitions, and retention drops whole days.

-- One row per captured response; `id` is the call's audit record id, `body` the entry as the
-- admin API shows it.
CREATE TABLE aigate_provenance_entries (
    id       text NOT NULL,
    time     timestamptz NOT NULL,
    replica  text NOT NULL,
    body     jsonb NOT NULL,
    PRIMARY KEY (id, time)
) PARTITION BY RANGE (time);
CREATE INDEX aigate_provenance_entries_id ON aigate_provenance_entries (id);

-- The index a scan asks: fingerprint -> entries.
CREATE TABLE aigate_provenance_fingerprints (
    hash      bigint NOT NULL,
    entry_id  text NOT NULL,
    time      timestamptz NOT NULL,
    PRIMARY KEY (hash, entry_id, time)
) PARTITION BY RANGE (time);
