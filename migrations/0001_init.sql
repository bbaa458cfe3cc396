-- deltabook schema, version 1. Applied once by the engine at start
-- (schema_migrations records it); every statement is idempotent as well.

-- Append-only accepted trade versions and lot-method changes: the audit log
-- and the source of truth for rebuilding state. event_ver is the engine's own
-- strictly increasing sequence (engine order); engine_time is the engine
-- timestamp the event was assigned, so a rebuild reproduces every as_of.
CREATE TABLE IF NOT EXISTS event_store (
    position_key     text        NOT NULL, -- the position key, or the scope of a lot-method change
    event_ver        bigint      NOT NULL,
    engine_time      bigint      NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('trade', 'method')),
    trade_id         text,
    version          bigint,
    action           text,
    method           text,                 -- kind = 'method': FIFO/LIFO/HIFO, NULL = override removed
    payload          bytea       NOT NULL, -- the original bytes
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    correlation_id   text,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (position_key, event_ver)
) PARTITION BY HASH (position_key);

DO $$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS event_store_p%s PARTITION OF event_store FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
            lpad(i::text, 2, '0'), i);
    END LOOP;
END $$;

CREATE INDEX IF NOT EXISTS event_store_trade ON event_store (trade_id, version);
CREATE INDEX IF NOT EXISTS event_store_correlation ON event_store (correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS event_store_time ON event_store (engine_time, event_ver);

-- Current state: exactly the rows of positions.csv and lots.csv.
CREATE TABLE IF NOT EXISTS positions (
    position_key text    PRIMARY KEY,
    quantity     numeric NOT NULL,
    lot_count    bigint  NOT NULL,
    cost_basis   numeric NOT NULL,
    realized_pnl numeric NOT NULL,
    as_of        bigint  NOT NULL
);

CREATE TABLE IF NOT EXISTS lots (
    position_key text    NOT NULL,
    lot_id       text    NOT NULL,
    side         text    NOT NULL CHECK (side IN ('LONG', 'SHORT')),
    open_date    date    NOT NULL,
    quantity     numeric NOT NULL,
    price        numeric NOT NULL,
    PRIMARY KEY (position_key, lot_id)
);

-- Append-only correction events (the same events as the Kafka topic, same
-- as_of); id is the commit order and the outbox cursor.
CREATE TABLE IF NOT EXISTS corrections (
    id           bigserial   PRIMARY KEY,
    position_key text        NOT NULL,
    as_of        bigint      NOT NULL,
    event        json        NOT NULL, -- the event text exactly as published
    committed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (position_key, as_of)
);

-- Rejected events with their original bytes; id is the DLQ outbox cursor.
CREATE TABLE IF NOT EXISTS dead_letters (
    id               bigserial   PRIMARY KEY,
    engine_time      bigint      NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    reason           text        NOT NULL,
    payload          bytea       NOT NULL,
    committed_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_topic, source_partition, source_offset)
);

-- Source offsets committed with the state they produced: the next offset to
-- read per (topic, partition), and the last engine time committed.
CREATE TABLE IF NOT EXISTS sink_progress (
    source_topic     text    NOT NULL,
    source_partition integer NOT NULL,
    next_offset      bigint  NOT NULL,
    engine_time      bigint  NOT NULL,
    PRIMARY KEY (source_topic, source_partition)
);
