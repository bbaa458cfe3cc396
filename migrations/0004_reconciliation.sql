-- deltabook schema, version 4: reconciliation (../shared/spec/reconciliation.md).
-- Current state, the restart snapshot of reconciliation's inputs, and the
-- break-event outbox, all written in the per-timestamp transaction.

-- Current valuations: one row per position with a live price.
CREATE TABLE IF NOT EXISTS valuations (
    position_key   text COLLATE "C" PRIMARY KEY,
    price          numeric NOT NULL,
    market_value   numeric NOT NULL,
    unrealized_pnl numeric NOT NULL,
    engine_time    bigint  NOT NULL
);

-- Current breaks: at most one per position.
CREATE TABLE IF NOT EXISTS breaks (
    position_key       text COLLATE "C" PRIMARY KEY,
    as_of_date         date    NOT NULL,
    kind               text    NOT NULL CHECK (kind IN ('QUANTITY_MISMATCH', 'MISSING_INTERNAL', 'MISSING_EXTERNAL')),
    internal_quantity  numeric NOT NULL,
    custodian_quantity numeric NOT NULL,
    difference         numeric NOT NULL,
    engine_time        bigint  NOT NULL
);

-- Current per-account sequence gaps.
CREATE TABLE IF NOT EXISTS sequence_gaps (
    account_id    text COLLATE "C" NOT NULL,
    first_missing bigint NOT NULL,
    last_missing  bigint NOT NULL,
    engine_time   bigint NOT NULL,
    PRIMARY KEY (account_id, first_missing)
);

-- Restart snapshot: min and max sequence per account (with sequence_gaps,
-- the whole state of the gap rule).
CREATE TABLE IF NOT EXISTS sequence_ranges (
    account_id   text COLLATE "C" PRIMARY KEY,
    min_sequence bigint NOT NULL,
    max_sequence bigint NOT NULL,
    engine_time  bigint NOT NULL
);

-- Restart snapshot: the live tick per security and what orders it.
CREATE TABLE IF NOT EXISTS live_prices (
    security_id      text COLLATE "C" PRIMARY KEY,
    price            numeric NOT NULL,
    as_of_s          bigint  NOT NULL, -- UTC seconds since the epoch
    as_of_ns         integer NOT NULL, -- >= 10^9 inside a leap second
    source_partition integer NOT NULL,
    source_offset    bigint  NOT NULL,
    engine_time      bigint  NOT NULL
);

-- Restart snapshot: the live custodian statement per position.
CREATE TABLE IF NOT EXISTS live_statements (
    position_key     text COLLATE "C" PRIMARY KEY,
    quantity         numeric NOT NULL,
    as_of_date       date    NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint  NOT NULL,
    engine_time      bigint  NOT NULL
);

-- Append-only break events (OPENED / CHANGED / RESOLVED), the history of
-- each break; id is the outbox cursor of the reconciliation-breaks topic.
CREATE TABLE IF NOT EXISTS break_events (
    id           bigserial   PRIMARY KEY,
    position_key text        COLLATE "C" NOT NULL,
    engine_time  bigint      NOT NULL,
    event        json        NOT NULL, -- the event text exactly as published
    committed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (position_key, engine_time)
);
