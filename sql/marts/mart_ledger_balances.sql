-- model: mart_ledger_balances_as_of
-- materialized: macro
-- grain: one row per K-AUS account_id: its balance from posted K-AUS movements up to and including as_of
--        (carbon milli-credit accounts are not money: left out)
-- columns: account_id, balance_kaus_units, movements, last_movement_at
-- usage: SELECT * FROM mart_ledger_balances_as_of(TIMESTAMPTZ '2026-11-01 12:00:00+00')
CREATE OR REPLACE MACRO mart_ledger_balances_as_of(as_of) AS TABLE
WITH posted AS (
    SELECT * FROM stg_ledger_transfers
    WHERE asset = 'KAUS' AND kind IN ('POSTED', 'POST_PENDING') AND occurred_at <= as_of
), moves AS (
    SELECT credit_account_id AS account_id, amount_units AS delta, occurred_at FROM posted
    UNION ALL
    SELECT debit_account_id, -amount_units, occurred_at FROM posted
)
SELECT account_id, sum(delta) AS balance_kaus_units, count(*) AS movements, max(occurred_at) AS last_movement_at
FROM moves GROUP BY account_id;
