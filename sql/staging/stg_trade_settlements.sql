-- model: stg_trade_settlements
-- materialized: table
-- grain: one row per trade_id the P2P settlement engine answered (settled, or rejected: nothing moved)
-- columns: trade_id, status (completed|failed), market_id, region, buyer_account_id, seller_account_id,
--          notional_kaus_units, fee_kaus_units, delivered_wh, duration_ms, settled_at
SELECT
    event_id                                                   AS trade_id,
    CASE payload->>'status' WHEN 'SETTLED' THEN 'completed' ELSE 'failed' END AS status,
    payload->>'market_id'                                      AS market_id,
    split_part(split_part(payload->>'market_id', '/', 2), '-', 1) AS region,
    payload->>'buyer_account_id'                               AS buyer_account_id,
    payload->>'seller_account_id'                              AS seller_account_id,
    CAST(payload->>'notional_kaus_units' AS BIGINT)            AS notional_kaus_units,
    CAST(payload->>'fee_kaus_units' AS BIGINT)                 AS fee_kaus_units,
    CAST(payload->>'delivered_wh' AS BIGINT)                   AS delivered_wh,
    CAST((coalesce(CAST(payload->'phase_durations_us'->>'matching' AS BIGINT), 0)
        + coalesce(CAST(payload->'phase_durations_us'->>'validation' AS BIGINT), 0)
        + coalesce(CAST(payload->'phase_durations_us'->>'transfer' AS BIGINT), 0)
        + coalesce(CAST(payload->'phase_durations_us'->>'minting' AS BIGINT), 0)) // 1000 AS INTEGER) AS duration_ms,
    event_ts                                                   AS settled_at
FROM {{ source('ENERGY_SETTLEMENTS') }}
