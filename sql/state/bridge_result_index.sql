-- The bridge's result index: a local SQLite cache of bridge.payouts.journal (the journal stays the truth).
-- Grain of results: one row per request id the journal holds a result for.
-- Grain of checkpoints: one row per journal partition; every journal entry below next_offset is reflected
-- here (results written, intents closed by their result). Written in the same transaction as the rows.
-- Each statement is preceded by "-- name: <name>"; streams/result_index.py runs them by name.

-- name: create_meta
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- name: create_results
CREATE TABLE IF NOT EXISTS results (
    request_id TEXT PRIMARY KEY,
    partition  INTEGER NOT NULL,
    body       BLOB NOT NULL  -- the result as the journal's JSON (runner.result_to_json)
);

-- name: create_checkpoints
CREATE TABLE IF NOT EXISTS checkpoints (
    partition   INTEGER PRIMARY KEY,
    next_offset INTEGER NOT NULL CHECK (next_offset >= 0)
);

-- name: journal_id
SELECT value FROM meta WHERE key = 'journal_id';

-- name: set_journal_id
INSERT INTO meta (key, value) VALUES ('journal_id', ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: forget_all_results
DELETE FROM results;

-- name: forget_all_checkpoints
DELETE FROM checkpoints;

-- name: forget_partition_results
DELETE FROM results WHERE partition = ?;

-- name: forget_partition_checkpoint
DELETE FROM checkpoints WHERE partition = ?;

-- name: result
SELECT body FROM results WHERE request_id = ?;

-- name: put_result
INSERT INTO results (request_id, partition, body) VALUES (?, ?, ?)
ON CONFLICT (request_id) DO UPDATE SET partition = excluded.partition, body = excluded.body;

-- name: checkpoint
SELECT next_offset FROM checkpoints WHERE partition = ?;

-- name: set_checkpoint
INSERT INTO checkpoints (partition, next_offset) VALUES (?, ?)
ON CONFLICT (partition) DO UPDATE SET next_offset = excluded.next_offset;

-- name: count_results
SELECT count(*) FROM results;

-- name: checkpoints
SELECT partition, next_offset FROM checkpoints ORDER BY partition;
