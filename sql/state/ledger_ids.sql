-- The ledger's applied ids (streams/p2p/id_store.py): every command the ledger applied, kept for ever so that a
-- re-sent command gets its original outcome, and how each hold ended. Local SQLite beside the ledger's snapshots.
-- Grain of transfers: one row per applied transfer id. Grain of resolutions: one row per resolved hold.
-- seq is the ledger's id sequence at the entry (domain.ledger.IdStore): a snapshot records the sequence it covers,
-- and restoring it deletes every row past it (those commands are replayed and applied again).
-- meta: topic_id (the ledger.commands the rows come from) and last_seq (every entry up to it is here), written in
-- the same transaction as the rows.
-- Each statement is preceded by "-- name: <name>"; streams/p2p/id_store.py runs them by name.

-- name: create_meta
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- name: create_transfers
CREATE TABLE IF NOT EXISTS transfers (
    seq         INTEGER PRIMARY KEY CHECK (seq > 0),
    transfer_id TEXT NOT NULL UNIQUE,
    body        BLOB NOT NULL  -- the command and its result (id_store.encode_entry)
);

-- name: create_resolutions
CREATE TABLE IF NOT EXISTS resolutions (
    seq        INTEGER PRIMARY KEY CHECK (seq > 0),
    pending_id TEXT NOT NULL UNIQUE,
    body       BLOB NOT NULL  -- state, posted units, resolved by, resolved at (id_store.encode_resolution)
);

-- name: meta
SELECT value FROM meta WHERE key = ?;

-- name: set_meta
INSERT INTO meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: transfer
SELECT body FROM transfers WHERE transfer_id = ?;

-- name: resolution
SELECT body FROM resolutions WHERE pending_id = ?;

-- name: put_transfer
INSERT OR REPLACE INTO transfers (seq, transfer_id, body) VALUES (?, ?, ?);

-- name: put_resolution
INSERT OR REPLACE INTO resolutions (seq, pending_id, body) VALUES (?, ?, ?);

-- name: forget_transfers_after
DELETE FROM transfers WHERE seq > ?;

-- name: forget_resolutions_after
DELETE FROM resolutions WHERE seq > ?;

-- name: count_transfers
SELECT count(*) FROM transfers;
