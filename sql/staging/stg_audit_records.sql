-- model: stg_audit_records
-- materialized: table
-- grain: one row per audit_id (spec §7.2 record)
-- columns: audit_id, transaction_id, action, actor_user_id, currency, settlement_rail, recorded_at
SELECT
    event_id                                    AS audit_id,
    payload->>'transactionId'                   AS transaction_id,
    payload->>'action'                          AS action,
    payload->'actor'->>'userId'                 AS actor_user_id,
    payload->'details'->>'currency'             AS currency,
    payload->'details'->>'settlementRail'       AS settlement_rail,
    event_ts                                    AS recorded_at
FROM {{ source('AUDIT_RECORDS') }}
