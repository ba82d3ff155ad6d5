-- The settler's settled trades (streams/p2p/settled_store.py): every trade the ledger settled, kept for ever so that
-- a re-sent trade gets its original outcome and another trade under a settled id is refused. Local SQLite beside
-- the ledger's snapshots and its id store (ledger_ids.sql), under the same discipline.
-- Grain of settled: one row per settled trade id.
-- seq is the settler's settled sequence at the entry (domain.trade_settlement.SettledStore): a snapshot records
-- the sequence it covers, and restoring it deletes every row past it (those trades are settled again).
-- meta: topic_id (the ledger.commands the rows come from) and last_seq (every entry up to it is here), written in
-- the same transaction as the rows.
-- Each statement is preceded by "-- name: <name>"; streams/p2p/settled_store.py runs them by name.

-- name: create_meta
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- name: create_settled
CREATE TABLE IF NOT EXISTS settled (
    seq      INTEGER PRIMARY KEY CHECK (seq > 0),
    trade_id TEXT NOT NULL UNIQUE,
    body     BLOB NOT NULL  -- the trade and what settling it moved (settled_store.encode_settled)
);

-- name: meta
SELECT value FROM meta WHERE key = ?;

-- name: set_meta
INSERT INTO meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: settled
SELECT body FROM settled WHERE trade_id = ?;

-- name: put_settled
INSERT OR REPLACE INTO settled (seq, trade_id, body) VALUES (?, ?, ?);

-- name: forget_settled_after
DELETE FROM settled WHERE seq > ?;

-- name: count_settled
SELECT count(*) FROM settled;
