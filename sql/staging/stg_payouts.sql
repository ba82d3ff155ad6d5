-- model: stg_payouts
-- materialized: table
-- grain: one row per payout_id with a result (request joined for the account and K-AUS amount)
-- columns: settlement_id, status, provider, provider_reference, currency, amount_minor, fee_minor, fx_rate,
--          account_id, payout_account, kaus_units, requested_at, settled_at, duration_ms
SELECT
    r.event_id                                                        AS settlement_id,
    CASE r.payload->>'status' WHEN 'PAID' THEN 'completed' ELSE 'failed' END AS status,
    r.payload->>'provider'                                            AS provider,
    NULLIF(r.payload->>'provider_reference', '')                      AS provider_reference,
    r.payload->>'currency'                                            AS currency,
    CAST(r.payload->>'amount_minor' AS BIGINT)                        AS amount_minor,
    CAST(r.payload->>'fee_minor' AS BIGINT)                           AS fee_minor,
    CAST(r.payload->>'rate' AS DECIMAL(38, 10))                       AS fx_rate,
    q.payload->>'account_id'                                          AS account_id,
    q.payload->>'payout_account'                                      AS payout_account,
    CAST(q.payload->>'amount_kaus_units' AS BIGINT)                   AS kaus_units,
    q.event_ts                                                        AS requested_at,
    r.event_ts                                                        AS settled_at,
    CAST(epoch_ms(r.event_ts) - epoch_ms(q.event_ts) AS BIGINT)       AS duration_ms
FROM {{ source('PAYOUT_RESULTS') }} r
LEFT JOIN {{ source('PAYOUT_REQUESTS') }} q ON q.event_id = r.event_id
