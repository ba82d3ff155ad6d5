-- model: fct_settlements
-- materialized: table
-- grain: one row per settlement (card payment, holder payout or P2P trade), whatever its outcome
-- columns: settlement_id, kind (bridge|payout|trade), status (completed|failed), provider (NULL: no statement
--          feed, e.g. PAYPAY_BUSINESS, PAYFORT and the K-AUS ledger), rail, region, currency (KAUS for trades),
--          amount_minor, fee_minor, kaus_units, fx_rate, provider_reference, counterparty, payer_account_id,
--          settled_at, settled_date (UTC), duration_ms, audit_ref, has_audit
-- kind: bridge = a card payment; payout = a holder's auto-payout, taken from the bridge settlement that executed
--       it (payout_id set; settlement_id = payout_id; counterparty = payer = the holder paid out). payouts.results
--       (stg_payouts) is derived from that settlement by the auto-payout service and is not a settlement of its
--       own here: taking both would count every payout twice (stg_payouts says why the bridge's record is the one).
WITH unioned AS (
    SELECT b.settlement_id, CASE WHEN b.payout_id IS NULL THEN 'bridge' ELSE 'payout' END AS kind, b.status,
           NULLIF(r.provider, '') AS provider, b.rail, b.region, b.currency, b.amount_minor, b.fee_minor,
           b.kaus_units, b.fx_rate, b.provider_reference,
           CASE WHEN b.payout_id IS NULL THEN b.merchant_id ELSE b.payer_account_id END AS counterparty,
           b.payer_account_id, b.settled_at, b.duration_ms,
           coalesce(b.bridge_tx_id, b.settlement_id) AS audit_ref
    FROM stg_bridge_settlements b
    LEFT JOIN rail_providers r ON r.rail = b.rail
    UNION ALL
    SELECT t.trade_id, 'trade', t.status, NULL, 'KAUS_LEDGER', t.region, 'KAUS', t.notional_kaus_units,
           t.fee_kaus_units, t.notional_kaus_units, NULL, NULL, t.seller_account_id, t.buyer_account_id,
           t.settled_at, t.duration_ms, t.trade_id
    FROM stg_trade_settlements t
)
SELECT u.*,
       CAST(u.settled_at AS DATE) AS settled_date,
       a.transaction_id IS NOT NULL AS has_audit
FROM unioned u
LEFT JOIN (SELECT DISTINCT transaction_id FROM stg_audit_records) a ON a.transaction_id = u.audit_ref
