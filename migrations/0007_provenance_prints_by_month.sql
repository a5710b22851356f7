-- aigate schema 7: the fingerprint index a scan asks, partitioned by month instead of by day
-- (docs/provenance.md, "PostgreSQL" under "Scan speed"). PostgreSQL has no index across
-- partitions, so a fingerprint is looked up in every partition of the index: 365 probes with
-- a year of days (about 4 ms of PostgreSQL's CPU a fingerprint), 13 with a year of months.
--
-- Entries stay partitioned by day, so retention still removes a day's calls on the day. A month
-- of the index is dropped once all of it is past retention; until then the fingerprints of
-- entries already swept answer nothing (a lookup keeps only the hits whose entry it read).

-- A replica still on an earlier release may be writing the day table while this runs: its
-- writes wait here until the migration commits (and then go through the trigger below), so
-- none lands after the copy and is lost to the TRUNCATE.
LOCK TABLE aigate_provenance_fingerprints IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE aigate_provenance_prints (
    hash      bigint NOT NULL,
    entry_id  text NOT NULL,
    time      timestamptz NOT NULL,
    PRIMARY KEY (hash, entry_id, time)
) PARTITION BY RANGE (time);

-- Makes sure the index has the month of `at`, bounded in UTC whatever the session's time zone.
-- Under the advisory lock the writers take to make partitions (PARTITION_LOCK in
-- src/provenance/ledger/postgres.rs), so two replicas never race to make the same one.
CREATE FUNCTION aigate_provenance_prints_month(at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m timestamp := date_trunc('month', at AT TIME ZONE 'UTC');
BEGIN
    IF to_regclass('aigate_provenance_prints_' || to_char(m, 'YYYYMM')) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(7019255162495922294);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS aigate_provenance_prints_%s PARTITION OF aigate_provenance_prints
         FOR VALUES FROM (%L) TO (%L)',
        to_char(m, 'YYYYMM'),
        to_char(m, 'YYYY-MM-DD"T00:00:00Z"'),
        to_char(m + interval '1 month', 'YYYY-MM-DD"T00:00:00Z"'));
END $$;

SELECT aigate_provenance_prints_month(m)
FROM (SELECT DISTINCT date_trunc('month', time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m
      FROM aigate_provenance_fingerprints) months;

INSERT INTO aigate_provenance_prints (hash, entry_id, time)
    SELECT hash, entry_id, time FROM aigate_provenance_fingerprints;

-- Entries a replica on release 5 wrote since migration 6, without their list: filled as that
-- migration filled the older ones, before the rows they came from go.
UPDATE aigate_provenance_entries e SET prints = g.prints
FROM (SELECT entry_id, time, array_agg(hash) AS prints
      FROM aigate_provenance_fingerprints GROUP BY entry_id, time) g
WHERE e.prints IS NULL AND g.entry_id = e.id AND g.time = e.time;
UPDATE aigate_provenance_entries SET prints = '{}' WHERE prints IS NULL;

TRUNCATE aigate_provenance_fingerprints;

-- A replica still on an earlier release (a rolling upgrade) keeps writing the day-partitioned
-- table: each row it writes there is written to this index too, in the same transaction, so
-- every lookup finds it. (Its rows stay there as well: an entry of release 5 has no `prints`,
-- and a replica's catch-up reads them from that table.)
CREATE FUNCTION aigate_provenance_prints_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM aigate_provenance_prints_month(NEW.time);
    INSERT INTO aigate_provenance_prints (hash, entry_id, time)
        VALUES (NEW.hash, NEW.entry_id, NEW.time) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER aigate_provenance_prints_forward AFTER INSERT ON aigate_provenance_fingerprints
    FOR EACH ROW EXECUTE FUNCTION aigate_provenance_prints_forward();
