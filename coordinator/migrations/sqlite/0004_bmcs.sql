-- Bare-metal nodes reached through a BMC (a `nodes` row with role 'baremetal'), the agent that
-- drives the BMC, and the power state Ferric expects and last saw. The password is a secret:
-- the API never returns it and it is only sent to the driving agent over mutual TLS.
CREATE TABLE bmcs (
    node            TEXT PRIMARY KEY REFERENCES nodes(name),
    address         TEXT NOT NULL,
    password        TEXT NOT NULL,
    via             TEXT NOT NULL REFERENCES nodes(name),
    macs            TEXT NOT NULL DEFAULT '',
    power_expected  TEXT,
    expected_at_ms  BIGINT,
    power_observed  TEXT,
    observed_at_ms  BIGINT,
    last_error      TEXT,
    flag            TEXT,
    flagged_at_ms   BIGINT
);
CREATE INDEX bmcs_via ON bmcs(via);
