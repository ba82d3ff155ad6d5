-- model: mart_settlements_daily
-- materialized: view
-- grain: one row per settled_date x currency x region x rail (x kind)
-- columns: settled_date, currency, region, rail, kind, settlements, completed, failed, success_rate,
--          amount_minor (completed), fee_minor (completed)
SELECT settled_date, currency, region, rail, kind,
       count(*)                                         AS settlements,
       count(*) FILTER (WHERE status = 'completed')     AS completed,
       count(*) FILTER (WHERE status = 'failed')        AS failed,
       round(count(*) FILTER (WHERE status = 'completed') / count(*), 6) AS success_rate,
       sum(amount_minor) FILTER (WHERE status = 'completed') AS amount_minor,
       sum(fee_minor) FILTER (WHERE status = 'completed')    AS fee_minor
FROM fct_settlements
GROUP BY ALL
