-- model: raw_layer
-- materialized: script
-- grain: raw_events one row per (topic, event_id); raw_offsets one row per (topic, partition, offset) read;
--        raw_rejects one row per message that failed its contract; meta_topic_offsets one row per (topic, partition)

CREATE TABLE IF NOT EXISTS raw_events (
    topic       VARCHAR     NOT NULL,
    event_id    VARCHAR     NOT NULL,   -- the message's idempotency key (request_id, payout_id, transfer_id, ...)
    "partition" INTEGER     NOT NULL,   -- where the first copy was read
    "offset"    BIGINT      NOT NULL,
    event_ts    TIMESTAMPTZ NOT NULL,   -- the business time carried by the message
    payload     JSON        NOT NULL,   -- the message as produced (contract-valid JSON)
    loaded_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, event_id)
);

CREATE TABLE IF NOT EXISTS raw_offsets (
    topic       VARCHAR NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset"    BIGINT  NOT NULL,
    event_id    VARCHAR,                -- NULL when the message was rejected
    status      VARCHAR NOT NULL,       -- landed | duplicate | rejected
    PRIMARY KEY (topic, "partition", "offset")
);

CREATE TABLE IF NOT EXISTS raw_rejects (
    topic       VARCHAR NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset"    BIGINT  NOT NULL,
    reason      VARCHAR NOT NULL,
    payload     VARCHAR,
    PRIMARY KEY (topic, "partition", "offset")
);

CREATE TABLE IF NOT EXISTS meta_topic_offsets (
    topic        VARCHAR NOT NULL,
    "partition"  INTEGER NOT NULL,
    low_offset   BIGINT  NOT NULL,      -- first offset of the earliest window landed
    high_offset  BIGINT  NOT NULL,      -- high-water mark landed (next offset to read)
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (topic, "partition")
);

CREATE TABLE IF NOT EXISTS raw_provider_lines (
    line_id            VARCHAR PRIMARY KEY,  -- PROVIDER:statement-day:provider-reference[#n]
    provider           VARCHAR NOT NULL,
    statement_date     DATE    NOT NULL,
    provider_reference VARCHAR NOT NULL,
    our_reference      VARCHAR,
    counterparty       VARCHAR,
    currency           VARCHAR NOT NULL,
    amount_minor       BIGINT  NOT NULL,
    fee_minor          BIGINT  NOT NULL,
    fx_rate            DECIMAL(38, 10),
    value_date         DATE    NOT NULL,
    booked_at          TIMESTAMPTZ NOT NULL,
    source_file        VARCHAR NOT NULL,
    loaded_at          TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS meta_statement_files (
    provider       VARCHAR NOT NULL,
    statement_date DATE    NOT NULL,
    path           VARCHAR NOT NULL,
    sha256         VARCHAR,             -- NULL: the statement was not delivered
    lines          INTEGER NOT NULL,
    loaded_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (provider, statement_date)
);
