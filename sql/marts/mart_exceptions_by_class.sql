-- model: mart_exceptions_by_class
-- materialized: view
-- grain: one row per recon_date x break_class raised that day
-- columns: recon_date, break_class, breaks, amount_delta_minor_abs
SELECT recon_date, break_class, count(*) AS breaks, sum(abs(amount_delta_minor)) AS amount_delta_minor_abs
FROM recon_results
WHERE outcome = 'break'
GROUP BY ALL
