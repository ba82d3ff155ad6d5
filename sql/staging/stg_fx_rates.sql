-- model: stg_fx_rates
-- materialized: table
-- grain: one row per FX quote_id
-- columns: quote_id, source, base, quote, rate, as_of
SELECT
    event_id                                   AS quote_id,
    payload->>'source'                         AS source,
    payload->>'base'                           AS base,
    payload->>'quote'                          AS quote,
    CAST(payload->>'rate' AS DECIMAL(38, 10))  AS rate,
    event_ts                                   AS as_of
FROM {{ source('FX_RATES') }}
