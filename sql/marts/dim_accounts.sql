-- model: dim_accounts
-- materialized: table
-- grain: one row per account_id seen as payer, merchant, payout account, trade party or ledger account
-- columns: account_id, roles (sorted list), first_seen, last_seen, settlements
WITH seen AS (
    SELECT payer_account_id AS account_id, 'payer' AS role, settled_at AS ts, 1 AS n FROM stg_bridge_settlements
    UNION ALL SELECT merchant_id, 'merchant', settled_at, 1 FROM stg_bridge_settlements WHERE merchant_id IS NOT NULL
    UNION ALL SELECT account_id, 'payout_account', settled_at, 1 FROM stg_payouts WHERE account_id IS NOT NULL
    UNION ALL SELECT buyer_account_id, 'buyer', settled_at, 1 FROM stg_trade_settlements
    UNION ALL SELECT seller_account_id, 'seller', settled_at, 1 FROM stg_trade_settlements
    UNION ALL SELECT debit_account_id, 'ledger', occurred_at, 0 FROM stg_ledger_transfers
    UNION ALL SELECT credit_account_id, 'ledger', occurred_at, 0 FROM stg_ledger_transfers
)
SELECT account_id,
       list_sort(list_distinct(list(role))) AS roles,
       min(ts) AS first_seen,
       max(ts) AS last_seen,
       sum(n) AS settlements
FROM seen
GROUP BY account_id
