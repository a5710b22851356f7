-- aigate schema 8: day partitions (of the audit table and of the ledger's entries) bounded by
-- the UTC day, whatever the server's time zone (docs/operations.md, "PostgreSQL").
--
-- Until now each day's partition was made as `FROM ('2026-12-05') TO ('2026-12-06')`: date
-- literals, which PostgreSQL reads in the session's time zone. On a server whose `timezone` is
-- not UTC, a row late (east of UTC) or early (west) in the UTC day then fell outside the
-- partition named for its day, and its insert failed, every day at the same hours: the audit
-- shipper stalled on it and the ledger's writes of those hours were lost.
--
-- Partitions already made keep their bounds (moving their rows would rewrite the tables). A new
-- one covers the UTC day of the row it is made for, less whatever an existing partition already
-- covers: so after an upgrade the gap or overlap the old bounds leave at their end is filled
-- once, and from the next day on partitions are whole UTC days.

-- The range partitions of `parent` with their bounds. Bounds are read back from the catalog's
-- text, so that text is written in UTC and ISO whatever the session's settings.
CREATE FUNCTION aigate_partition_bounds(parent regclass)
RETURNS TABLE (name text, lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE
SET timezone = 'UTC' SET datestyle = 'ISO, YMD'
AS $$
    SELECT c.relname::text, b[1]::timestamptz, b[2]::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                    'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS b
    WHERE i.inhparent = parent
$$;

-- Makes sure a partition of `parent` (named `parent_YYYYMMDD`) holds rows at `at`, and returns
-- the bounds of the one that does. `lock` is the advisory lock the writers of that table take to
-- make partitions, so a replica on an earlier release never races this one.
CREATE FUNCTION aigate_day_partition(parent regclass, at timestamptz, lock bigint)
RETURNS TABLE (lo timestamptz, hi timestamptz)
LANGUAGE plpgsql
SET timezone = 'UTC' SET datestyle = 'ISO, YMD'
AS $$
DECLARE
    day date := (at AT TIME ZONE 'UTC')::date;
    start timestamptz := day::timestamp AT TIME ZONE 'UTC';
    stop timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
    name text := parent::text || '_' || to_char(day, 'YYYYMMDD');
    p record;
BEGIN
    PERFORM pg_advisory_xact_lock(lock);
    FOR p IN SELECT * FROM aigate_partition_bounds(parent) LOOP
        IF p.lo <= at AND at < p.hi THEN
            RETURN QUERY SELECT p.lo, p.hi;
            RETURN;
        END IF;
        -- `at` is outside this one: keep the new partition on `at`'s side of it.
        IF p.hi <= at THEN
            start := greatest(start, p.hi);
        ELSE
            stop := least(stop, p.lo);
        END IF;
    END LOOP;
    IF to_regclass(name) IS NOT NULL THEN
        -- The day's name is taken by a partition made in another time zone: this one fills
        -- what it leaves of the UTC day.
        name := name || '_' || to_char(start, 'HH24MI');
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                   name, parent, start, stop);
    RETURN QUERY SELECT start, stop;
END $$;
