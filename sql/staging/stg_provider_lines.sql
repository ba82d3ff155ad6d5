-- model: stg_provider_lines
-- materialized: view
-- grain: one row per provider statement line (line_id)
-- columns: line_id, provider, statement_date, provider_reference, our_reference, counterparty, currency,
--          amount_minor, fee_minor, fx_rate, value_date, booked_at, source_file
SELECT line_id, provider, statement_date, provider_reference, our_reference, counterparty, currency,
       amount_minor, fee_minor, fx_rate, value_date, booked_at, source_file
FROM raw_provider_lines
