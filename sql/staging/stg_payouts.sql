-- model: stg_payouts
-- materialized: table
-- grain: one row per payout_id with a result (payouts.results joined to payouts.requests)
-- columns: settlement_id, status, provider, provider_reference, currency, amount_minor, fee_minor, fx_rate,
--          account_id, payout_account, rule_id, trigger_type, trigger_id, requested_kaus_units, kaus_units,
--          bridge_tx_id, rail, reason_code, failed_phase, reason, requested_at, settled_at, duration_ms
-- The analysts' payout table (what was decided, by which rule and trigger, and how it ended). It is NOT the
-- record the reconciliation expects: the bridge executes each payout and its settlement
-- (stg_bridge_settlements, payout_id set) is what the provider's report lists and what the ledger's PAYOUT
-- movements carry; payouts.results is derived from it by the auto-payout service. fct_settlements and the ledger
-- tie-out therefore take a payout from the bridge settlement only, so a payout counts once.
-- payout_account: masked (****1623), never the holder's whole account.
-- kaus_units: K-AUS captured (PAID: the result's kaus_debited_units, else the requested amount; FAILED: NULL).
SELECT
    r.event_id                                                        AS settlement_id,
    CASE r.payload->>'status' WHEN 'PAID' THEN 'completed' ELSE 'failed' END AS status,
    r.payload->>'provider'                                            AS provider,
    NULLIF(r.payload->>'provider_reference', '')                      AS provider_reference,
    r.payload->>'currency'                                            AS currency,
    CAST(r.payload->>'amount_minor' AS BIGINT)                        AS amount_minor,
    CAST(r.payload->>'fee_minor' AS BIGINT)                           AS fee_minor,
    CAST(r.payload->>'rate' AS DECIMAL(38, 10))                       AS fx_rate,
    coalesce(r.payload->>'account_id', q.payload->>'account_id')      AS account_id,
    -- Personal data: masked for analysts (docs/security.md, "Encryption at rest"). Sealing on, payouts.requests
    -- already carries it masked (****1623) and sealed (payout_account_sealed, never selected here); sealing off, the
    -- plain account is masked here the same way: the last four characters of one longer than eight.
    CASE WHEN q.payload->>'payout_account' IS NULL THEN NULL
         WHEN starts_with(q.payload->>'payout_account', '****') THEN q.payload->>'payout_account'
         WHEN length(trim(q.payload->>'payout_account')) > 8
         THEN '****' || right(trim(q.payload->>'payout_account'), 4)
         ELSE '****' END                                              AS payout_account,
    coalesce(r.payload->>'rule_id', q.payload->>'rule_id')            AS rule_id,
    q.payload->>'trigger_type'                                        AS trigger_type,
    q.payload->>'trigger_id'                                          AS trigger_id,
    CAST(q.payload->>'amount_kaus_units' AS BIGINT)                   AS requested_kaus_units,
    CASE WHEN r.payload->>'status' = 'PAID'
         THEN CAST(coalesce(r.payload->>'kaus_debited_units', q.payload->>'amount_kaus_units') AS BIGINT) END
                                                                      AS kaus_units,
    r.payload->>'bridge_tx_id'                                        AS bridge_tx_id,
    r.payload->>'rail'                                                AS rail,
    r.payload->>'reason_code'                                         AS reason_code,
    r.payload->>'failed_phase'                                        AS failed_phase,
    r.payload->>'reason'                                              AS reason,
    q.event_ts                                                        AS requested_at,
    r.event_ts                                                        AS settled_at,
    CAST(epoch_ms(r.event_ts) - epoch_ms(q.event_ts) AS BIGINT)       AS duration_ms
FROM {{ source('PAYOUT_RESULTS') }} r
LEFT JOIN {{ source('PAYOUT_REQUESTS') }} q ON q.event_id = r.event_id
