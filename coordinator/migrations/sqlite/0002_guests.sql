-- Guests are desired state: where placement put them and what they should be.
CREATE TABLE guests (
    name            TEXT PRIMARY KEY,
    host            TEXT NOT NULL REFERENCES nodes(name),
    vcpus           INTEGER NOT NULL,
    memory_mib      BIGINT NOT NULL,
    disk_bytes      BIGINT NOT NULL,
    spec_json       TEXT NOT NULL,
    desired         TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    last_plan       BIGINT
);
CREATE INDEX guests_host ON guests(host);
