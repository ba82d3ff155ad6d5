-- model: mart_recon_daily
-- materialized: view
-- grain: one row per recon_date (spec §6.2 metrics)
-- columns: recon_date, settlements, auto_matched, exceptions, pending, automatic_match_rate, exception_rate,
--          audit_trail_coverage, resolved, avg_resolution_hours, open_exceptions
SELECT r.recon_date, r.settlements, r.auto_matched, r.exceptions, r.pending,
       r.automatic_match_rate, r.exception_rate, r.audit_trail_coverage,
       (SELECT count(*) FROM recon_exceptions e
         WHERE e.resolved_at IS NOT NULL AND CAST(e.resolved_at AS DATE) <= r.recon_date + 1) AS resolved,
       (SELECT round(avg(epoch(e.resolved_at - e.opened_at)) / 3600, 2) FROM recon_exceptions e
         WHERE e.resolved_at IS NOT NULL AND CAST(e.resolved_at AS DATE) <= r.recon_date + 1) AS avg_resolution_hours,
       (SELECT count(*) FROM recon_exceptions e
         WHERE e.opened_on <= r.recon_date AND (e.resolved_at IS NULL OR CAST(e.resolved_at AS DATE) > r.recon_date + 1))
         AS open_exceptions
FROM recon_runs r
