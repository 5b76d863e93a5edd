-- A bare-metal node's lifecycle beside its provision state: what it is doing (the step),
-- since when, until when it may (the deadline), the plan it waits for, its last error, and
-- what it was asked to become (erase mode, image, config drive) as JSON.
ALTER TABLE nodes ADD COLUMN provision_step TEXT;
ALTER TABLE nodes ADD COLUMN state_since_ms BIGINT;
ALTER TABLE nodes ADD COLUMN deadline_ms BIGINT;
ALTER TABLE nodes ADD COLUMN wait_plan BIGINT;
ALTER TABLE nodes ADD COLUMN provision_error TEXT;
ALTER TABLE nodes ADD COLUMN provision_error_at_ms BIGINT;
ALTER TABLE nodes ADD COLUMN provision_json TEXT;
UPDATE nodes SET state_since_ms = enrolled_at_ms WHERE provision_state IS NOT NULL;
CREATE INDEX nodes_deadline ON nodes(deadline_ms);
CREATE INDEX nodes_wait_plan ON nodes(wait_plan);

-- Every lifecycle transition of a node, in order.
CREATE TABLE transitions (
    node            TEXT NOT NULL REFERENCES nodes(name),
    seq             INTEGER NOT NULL,
    at_ms           BIGINT NOT NULL,
    from_state      TEXT NOT NULL,
    to_state        TEXT NOT NULL,
    step            TEXT,
    cause           TEXT NOT NULL,
    error           TEXT,
    PRIMARY KEY (node, seq)
);
