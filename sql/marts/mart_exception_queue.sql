-- model: mart_exception_queue
-- materialized: view
-- grain: one row per open exception (what an analyst works through), oldest and largest first
-- columns: exception_id, break_class, provider, currency, settlement_id, line_id, related_id, amount_delta_minor,
--          fee_delta_minor, opened_on, last_seen_on, age_days
SELECT exception_id, break_class, provider, currency, settlement_id, line_id, related_id,
       amount_delta_minor, fee_delta_minor, opened_on, last_seen_on, age_days
FROM recon_exceptions
WHERE state = 'open'
ORDER BY age_days DESC, abs(amount_delta_minor) DESC, exception_id
