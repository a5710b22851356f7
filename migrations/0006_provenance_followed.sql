-- aigate schema 6: what a replica needs to keep its own membership filter of the shared
-- provenance ledger (docs/provenance.md, "The ledger"). Without one, every fingerprint a scan
-- asks is looked up in every day's partition of aigate_provenance_fingerprints, which has no
-- index across partitions.
--
-- `prints`: the entry's fingerprints, so a replica reads an entry's whole list in one row (to
-- add it to its filter, and to answer the rest of a lookup from the fingerprints no other
-- entry holds), as the embedded ledger's `entry_prints` does.
-- `seq`: the order entries were committed in. Writers take an advisory lock before they draw
-- their numbers and hold it to their commit, so once a replica has seen entry N it has seen
-- every entry below N that will ever be committed: "every entry after N" is its catch-up.

ALTER TABLE aigate_provenance_entries ADD COLUMN seq bigint, ADD COLUMN prints bigint[];
CREATE SEQUENCE aigate_provenance_entries_seq;

-- Entries written before this migration: their fingerprints from the index table, numbered in
-- any order (all of them are committed).
UPDATE aigate_provenance_entries e SET prints = g.prints
FROM (SELECT entry_id, time, array_agg(hash) AS prints
      FROM aigate_provenance_fingerprints GROUP BY entry_id, time) g
WHERE g.entry_id = e.id AND g.time = e.time;
UPDATE aigate_provenance_entries SET prints = '{}' WHERE prints IS NULL;
UPDATE aigate_provenance_entries SET seq = nextval('aigate_provenance_entries_seq');

-- `prints` stays nullable: a replica still on the release before this one (a rolling upgrade)
-- writes none, and the filter then reads that entry's fingerprints from the index table.
ALTER TABLE aigate_provenance_entries
    ALTER COLUMN seq SET DEFAULT nextval('aigate_provenance_entries_seq'),
    ALTER COLUMN seq SET NOT NULL;
CREATE INDEX aigate_provenance_entries_seq_idx ON aigate_provenance_entries (seq);
