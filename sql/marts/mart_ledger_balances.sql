-- model: mart_ledger_balances_as_of
-- materialized: macro
-- grain: one row per account_id: its K-AUS balance from posted movements up to and including as_of
-- columns: account_id, balance_kaus_units, movements, last_movement_at
-- usage: SELECT * FROM mart_ledger_balances_as_of(TIMESTAMPTZ '2026-11-01 12:00:00+00')
CREATE OR REPLACE MACRO mart_ledger_balances_as_of(as_of) AS TABLE
WITH moves AS (
    SELECT credit_account_id AS account_id, amount_kaus_units AS delta, occurred_at
    FROM stg_ledger_transfers WHERE kind IN ('POSTED', 'POST_PENDING') AND occurred_at <= as_of
    UNION ALL
    SELECT debit_account_id, -amount_kaus_units, occurred_at
    FROM stg_ledger_transfers WHERE kind IN ('POSTED', 'POST_PENDING') AND occurred_at <= as_of
)
SELECT account_id, sum(delta) AS balance_kaus_units, count(*) AS movements, max(occurred_at) AS last_movement_at
FROM moves GROUP BY account_id;
