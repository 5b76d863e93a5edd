-- Per-boot tokens: rendered into a bare-metal node's iPXE script, bound to that node, used
-- once by its ramdisk to enroll, and dead when used, expired, or replaced by the next boot's.
CREATE TABLE boot_tokens (
    id              TEXT PRIMARY KEY,
    secret_sha256   TEXT NOT NULL,
    node            TEXT NOT NULL REFERENCES nodes(name),
    mac             TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    used_at_ms      BIGINT,
    revoked_at_ms   BIGINT
);
CREATE INDEX boot_tokens_node ON boot_tokens(node);

-- What a node's ramdisk found when it inspected the machine (the newest inspection).
CREATE TABLE inspections (
    node            TEXT PRIMARY KEY REFERENCES nodes(name),
    at_ms           BIGINT NOT NULL,
    inspection_json TEXT NOT NULL
);
