-- model: recon_layer
-- materialized: script
-- grain: recon_results one row per (recon_date, item); recon_runs one row per recon_date;
--        recon_exceptions one row per exception item (S:<settlement> or L:<line>);
--        recon_exception_actions one row per action on an exception; dq_results one row per check and date;
--        report_deliveries one row per (recon_date, sha256) sent

CREATE TABLE IF NOT EXISTS recon_results (
    recon_date         DATE    NOT NULL,
    settlement_id      VARCHAR,
    line_id            VARCHAR,
    tier               VARCHAR NOT NULL,   -- reference | tolerance | many_to_one | none
    outcome            VARCHAR NOT NULL,   -- matched | break | pending
    break_class        VARCHAR,
    amount_delta_minor BIGINT  NOT NULL,   -- provider - internal
    fee_delta_minor    BIGINT  NOT NULL,
    related_id         VARCHAR,
    provider           VARCHAR,
    currency           VARCHAR
);

CREATE TABLE IF NOT EXISTS recon_runs (
    recon_date            DATE PRIMARY KEY,
    engine                VARCHAR NOT NULL,
    settlements           BIGINT  NOT NULL,
    auto_matched          BIGINT  NOT NULL,
    exceptions            BIGINT  NOT NULL,
    pending               BIGINT  NOT NULL,
    automatic_match_rate  DECIMAL(9, 6) NOT NULL,
    exception_rate        DECIMAL(9, 6) NOT NULL,
    audit_trail_coverage  DECIMAL(9, 6) NOT NULL,
    breaks_by_class       JSON    NOT NULL,
    tolerances            JSON    NOT NULL
);

CREATE TABLE IF NOT EXISTS recon_exceptions (
    exception_id       VARCHAR PRIMARY KEY,  -- S:<settlement_id> | L:<line_id>
    break_class        VARCHAR NOT NULL,
    state              VARCHAR NOT NULL,     -- open | approved | corrected | written_off
    provider           VARCHAR,
    currency           VARCHAR,
    settlement_id      VARCHAR,
    line_id            VARCHAR,
    related_id         VARCHAR,
    amount_delta_minor BIGINT  NOT NULL,
    fee_delta_minor    BIGINT  NOT NULL,
    opened_on          DATE    NOT NULL,     -- recon date it was first raised
    opened_at          TIMESTAMPTZ NOT NULL,
    last_seen_on       DATE    NOT NULL,
    age_days           INTEGER NOT NULL,     -- as of the latest exception review
    resolved_at        TIMESTAMPTZ,
    resolved_by        VARCHAR,
    resolution_reason  VARCHAR
);

CREATE TABLE IF NOT EXISTS recon_exception_actions (
    action_id     VARCHAR PRIMARY KEY,
    exception_id  VARCHAR NOT NULL,
    action        VARCHAR NOT NULL,   -- opened | reclassified | approved | corrected | written_off | auto_resolved
    from_state    VARCHAR,
    to_state      VARCHAR NOT NULL,
    from_class    VARCHAR,
    to_class      VARCHAR,
    actor         VARCHAR NOT NULL,
    reason        VARCHAR NOT NULL,
    recon_date    DATE,
    acted_at      TIMESTAMPTZ NOT NULL,
    audit_record  JSON NOT NULL       -- contracts.models.AuditRecord (spec §7.2 shape)
);

CREATE TABLE IF NOT EXISTS dq_results (
    recon_date   DATE    NOT NULL,
    suite        VARCHAR NOT NULL,
    expectation  VARCHAR NOT NULL,
    target       VARCHAR NOT NULL,
    success      BOOLEAN NOT NULL,
    critical     BOOLEAN NOT NULL,
    observed     VARCHAR,
    PRIMARY KEY (recon_date, suite, expectation, target)
);

CREATE TABLE IF NOT EXISTS report_deliveries (
    recon_date  DATE    NOT NULL,
    sha256      VARCHAR NOT NULL,
    path        VARCHAR NOT NULL,
    archived_to VARCHAR NOT NULL,
    sent_to     VARCHAR NOT NULL,
    sent_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (recon_date, sha256)
);
