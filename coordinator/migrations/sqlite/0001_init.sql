-- Nodes enrolled with the coordinator (one per agent identity).
CREATE TABLE nodes (
    name            TEXT PRIMARY KEY,
    role            TEXT NOT NULL,
    enrolled_at_ms  BIGINT NOT NULL,
    last_seen_ms    BIGINT,
    capabilities    TEXT NOT NULL DEFAULT '',
    inventory_sha256 TEXT
);

-- Single-use bootstrap tokens; only a hash of the secret is kept.
CREATE TABLE tokens (
    id              TEXT PRIMARY KEY,
    secret_sha256   TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    used_at_ms      BIGINT,
    used_by         TEXT
);

-- Plans persist before they are pushed.
CREATE TABLE plans (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    node            TEXT NOT NULL REFERENCES nodes(name),
    steps_json      TEXT NOT NULL,
    step_count      INTEGER NOT NULL,
    state           TEXT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    pushed_at_us    BIGINT,
    accepted_at_us  BIGINT,
    finished_at_us  BIGINT
);
CREATE INDEX plans_node_state ON plans(node, state);

-- Every step event, exactly once: (plan_id, seq) is the agent's numbering.
CREATE TABLE events (
    plan_id         BIGINT NOT NULL REFERENCES plans(id),
    seq             INTEGER NOT NULL,
    step            INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    error_kind      TEXT,
    message         TEXT,
    progress_done   BIGINT,
    progress_total  BIGINT,
    changed         INTEGER,
    agent_at_ms     BIGINT NOT NULL,
    received_at_us  BIGINT NOT NULL,
    PRIMARY KEY (plan_id, seq)
);
