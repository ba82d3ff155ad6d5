-- model: recon_layer
-- materialized: script
-- grain: recon_results one row per (recon_date, item); recon_runs one row per recon_date;
--        recon_exceptions one row per exception item (K:<settlement>, S:<settlement> or L:<line>);
--        recon_exception_actions one row per action on an exception; recon_corrections one row per
--        LEDGER_CORRECTION governance request; dq_results one row per check and date;
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
    exception_id       VARCHAR PRIMARY KEY,  -- K:<settlement_id> | S:<settlement_id> | L:<line_id>
    break_class        VARCHAR NOT NULL,
    state              VARCHAR NOT NULL,     -- open | correction_requested | approved | corrected | written_off
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
                                      -- | correction_requested | correction_executed | correction_rejected
                                      -- | correction_expired (warehouse/exceptions.py)
    from_state    VARCHAR,
    to_state      VARCHAR NOT NULL,
    from_class    VARCHAR,
    to_class      VARCHAR,
    actor         VARCHAR NOT NULL,
    reason        VARCHAR NOT NULL,
    recon_date    DATE,
    acted_at      TIMESTAMPTZ NOT NULL,
    audit_record  JSON NOT NULL,      -- contracts.models.AuditRecord (spec §7.2 shape)
    published_at  TIMESTAMPTZ         -- the broker acknowledged audit_record on audit.records (outbox marker)
);
-- a warehouse made before the outbox: its actions were never published, so they go out with the next publish
ALTER TABLE recon_exception_actions ADD COLUMN IF NOT EXISTS published_at TIMESTAMPTZ;

CREATE TABLE IF NOT EXISTS recon_corrections (
    request_id         VARCHAR PRIMARY KEY,  -- domain.variance_rules.correction_request_id(exception_id, attempt)
    exception_id       VARCHAR NOT NULL,
    attempt            INTEGER NOT NULL,     -- 1, then 2 after a rejected or expired one, ...
    from_account       VARCHAR NOT NULL,     -- debited (the payer who owes the K-AUS)
    to_account         VARCHAR NOT NULL,     -- credited (the account the refused capture would have credited)
    amount_kaus_units  BIGINT  NOT NULL,     -- exact K-AUS base units (10^6 per K-AUS)
    requested_by       VARCHAR NOT NULL,
    requested_at       TIMESTAMPTZ NOT NULL,
    expires_at         TIMESTAMPTZ NOT NULL,
    request            JSON NOT NULL,        -- the governance.requests value, sent again as it is until acknowledged
    sent_at            TIMESTAMPTZ,          -- the broker acknowledged it on governance.requests (outbox marker)
    state              VARCHAR NOT NULL,     -- REQUESTED (no governance state seen yet) | PENDING | APPROVED
                                             -- | EXECUTED | REJECTED | EXPIRED (governance.multisig)
    reason_code        VARCHAR,
    reason             VARCHAR,
    decided_at         TIMESTAMPTZ,          -- the final state's updated_at on governance.multisig
    UNIQUE (exception_id, attempt)
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
