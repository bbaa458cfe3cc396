-- deltabook schema, version 2: what a restart loads instead of replaying the
-- event store, the writer fence, and the log of committed timestamps.
-- Every table here is written in the same per-timestamp transaction as the
-- state it describes (sinks/src/postgres/commit.rs).

-- The live version of every trade ever accepted (a cancelled trade keeps its
-- row, with position_key NULL: a lower version arriving later must not
-- revive it), and the duplicate rule's memory for that trade: the
-- fingerprint of every accepted version. One row per trade: restart reads
-- O(trades) rows, however many events amended them.
CREATE TABLE IF NOT EXISTS live_trades (
    trade_id      text    PRIMARY KEY,
    version       bigint  NOT NULL,
    position_key  text,             -- NULL: the live version is a CANCEL
    side          text    CHECK (side IN ('BUY', 'SELL')),
    quantity      numeric,
    price         numeric,
    trade_date    date,
    trade_time_s  bigint,           -- trade_time as UTC seconds since the epoch (NULL: absent)
    trade_time_ns integer,          -- its nanoseconds (>= 10^9 inside a leap second)
    engine_time   bigint  NOT NULL, -- the timestamp that made this version live
    -- 24 bytes per accepted version: version (8, big-endian) then the
    -- XXH3-128 fingerprint of the canonical parsed version (16, big-endian);
    -- see dataflows/src/trade.rs, TradeVersion::canonical_bytes.
    fingerprints  bytea   NOT NULL CHECK (length(fingerprints) % 24 = 0)
);

-- The lot-method map as it stands (the history is in event_store).
CREATE TABLE IF NOT EXISTS lot_methods (
    scope       text   PRIMARY KEY,
    method      text   NOT NULL CHECK (method IN ('FIFO', 'LIFO', 'HIFO')),
    engine_time bigint NOT NULL
);

-- The writer fence: one row. An instance that takes the writer lock bumps
-- epoch; every per-timestamp transaction first updates this row WHERE epoch
-- is its own, so an instance that lost the lock (a PostgreSQL restart drops
-- session locks) can never commit again.
CREATE TABLE IF NOT EXISTS writer (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch       bigint      NOT NULL,
    engine_time bigint      NOT NULL DEFAULT 0,
    taken_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO writer (singleton, epoch) VALUES (true, 0) ON CONFLICT DO NOTHING;

-- One row per committed engine timestamp and the writer epoch that committed
-- it (the primary key makes a second commit of a timestamp impossible).
CREATE TABLE IF NOT EXISTS committed_timestamps (
    engine_time  bigint      PRIMARY KEY,
    writer_epoch bigint      NOT NULL,
    accepted     integer     NOT NULL,
    corrections  integer     NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
