-- deltabook schema, version 2: what a restart loads instead of replaying the
-- event store, the writer fence, and the log of committed timestamps.
-- Every table here is written in the same per-timestamp transaction as the
-- state it describes (sinks/src/postgres/commit.rs).

-- The live version of every trade ever accepted (a cancelled trade keeps its
-- row, with position_key NULL: a lower version arriving later must not
-- revive it). One row per trade: restart cost grows with trades, not with
-- the events that amended them.
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
    engine_time   bigint  NOT NULL  -- the timestamp that made this version live
);

-- The duplicate rule's memory: the fingerprint (XXH3-128 of the canonical
-- parsed version, dataflows/src/trade.rs) of every accepted (trade_id, version).
CREATE TABLE IF NOT EXISTS trade_fingerprints (
    trade_id    text   NOT NULL,
    version     bigint NOT NULL,
    fingerprint bytea  NOT NULL CHECK (length(fingerprint) = 16),
    PRIMARY KEY (trade_id, version)
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
