-- model: stg_bridge_settlements
-- materialized: table
-- grain: one row per bridge request_id (its outcome: completed or failed): card payments and holders' auto-payouts
-- columns: settlement_id, status, bridge_tx_id, payout_id, payer_account_id, merchant_id, region, currency,
--          amount_minor, fee_minor, kaus_units, cashback_kaus_units, bonus_kaus_units, fx_rate, rail,
--          provider_reference, duration_ms, settled_at
-- payout_id: set when the bridge executed a holder's auto-payout (the request's `payout`; request_id = payout_id,
--          so settlement_id = payout_id): the payer is the holder paid out, cashback and bonus are 0, and its ledger
--          movements carry the reference kind PAYOUT with the payout_id instead of CARD_PAYMENT with the bridge_tx_id.
SELECT
    event_id                                              AS settlement_id,
    'completed'                                           AS status,
    payload->>'bridge_tx_id'                              AS bridge_tx_id,
    payload->>'payout_id'                                 AS payout_id,
    payload->>'payer_account_id'                          AS payer_account_id,
    payload->>'merchant_id'                               AS merchant_id,
    payload->>'region'                                    AS region,
    payload->>'currency'                                  AS currency,
    CAST(payload->>'amount_minor' AS BIGINT)              AS amount_minor,
    CAST(payload->>'provider_fee_minor' AS BIGINT)        AS fee_minor,
    CAST(payload->>'kaus_debited_units' AS BIGINT)        AS kaus_units,
    CAST(payload->>'cashback_kaus_units' AS BIGINT)       AS cashback_kaus_units,
    CAST(payload->>'ecosystem_bonus_kaus_units' AS BIGINT) AS bonus_kaus_units,
    CAST(payload->>'rate' AS DECIMAL(38, 10))             AS fx_rate,
    payload->>'rail'                                      AS rail,
    NULLIF(payload->>'provider_reference', '')            AS provider_reference,
    CAST(payload->>'total_duration_ms' AS INTEGER)        AS duration_ms,
    event_ts                                              AS settled_at
FROM {{ source('BRIDGE_SETTLEMENTS_COMPLETED') }}
UNION ALL BY NAME
SELECT
    event_id                                              AS settlement_id,
    'failed'                                              AS status,
    payload->>'bridge_tx_id'                              AS bridge_tx_id,
    payload->>'payout_id'                                 AS payout_id,
    payload->>'payer_account_id'                          AS payer_account_id,
    CAST(NULL AS VARCHAR)                                 AS merchant_id,
    payload->>'region'                                    AS region,
    payload->>'currency'                                  AS currency,
    CAST(payload->>'amount_minor' AS BIGINT)              AS amount_minor,
    CAST(0 AS BIGINT)                                     AS fee_minor,
    CAST(NULL AS BIGINT)                                  AS kaus_units,
    CAST(NULL AS BIGINT)                                  AS cashback_kaus_units,
    CAST(NULL AS BIGINT)                                  AS bonus_kaus_units,
    CAST(NULL AS DECIMAL(38, 10))                         AS fx_rate,
    payload->>'rail'                                      AS rail,
    CAST(NULL AS VARCHAR)                                 AS provider_reference,
    CAST(NULL AS INTEGER)                                 AS duration_ms,
    event_ts                                              AS settled_at
FROM {{ source('BRIDGE_SETTLEMENTS_FAILED') }}
