-- model: mart_settlement_latency
-- materialized: view
-- grain: one row per settled_date x region x rail, completed settlements with a duration (spec §8.1)
-- columns: settled_date, region, rail, settlements, avg_ms, p50_ms, p95_ms, p99_ms, max_ms
SELECT settled_date, region, rail,
       count(*)                                       AS settlements,
       round(avg(duration_ms), 1)                     AS avg_ms,
       quantile_cont(duration_ms, 0.50)               AS p50_ms,
       quantile_cont(duration_ms, 0.95)               AS p95_ms,
       quantile_cont(duration_ms, 0.99)               AS p99_ms,
       max(duration_ms)                               AS max_ms
FROM fct_settlements
WHERE status = 'completed' AND duration_ms IS NOT NULL
GROUP BY ALL
