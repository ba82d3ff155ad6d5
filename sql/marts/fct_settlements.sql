-- model: fct_settlements
-- materialized: table
-- grain: one row per settlement (bridge request, payout or P2P trade), whatever its outcome
-- columns: settlement_id, kind (bridge|payout|trade), status (completed|failed), provider (NULL: no statement
--          feed, e.g. PAYPAY_BUSINESS, PAYFORT and the K-AUS ledger), rail, region, currency (KAUS for trades),
--          amount_minor, fee_minor, kaus_units, fx_rate, provider_reference, counterparty, payer_account_id,
--          settled_at, settled_date (UTC), duration_ms, audit_ref, has_audit
WITH unioned AS (
    SELECT b.settlement_id, 'bridge' AS kind, b.status, NULLIF(r.provider, '') AS provider, b.rail,
           b.region, b.currency, b.amount_minor, b.fee_minor, b.kaus_units, b.fx_rate, b.provider_reference,
           b.merchant_id AS counterparty, b.payer_account_id, b.settled_at, b.duration_ms,
           coalesce(b.bridge_tx_id, b.settlement_id) AS audit_ref
    FROM stg_bridge_settlements b
    LEFT JOIN rail_providers r ON r.rail = b.rail
    UNION ALL
    SELECT p.settlement_id, 'payout', p.status, p.provider, 'PAYOUT_' || p.provider, 'GLOBAL', p.currency,
           p.amount_minor, p.fee_minor, p.kaus_units, p.fx_rate, p.provider_reference, p.account_id,
           p.account_id, p.settled_at, p.duration_ms, p.settlement_id
    FROM stg_payouts p
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
