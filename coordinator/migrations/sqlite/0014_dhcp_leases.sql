-- The boot services' DHCP leases and quarantined addresses, written when they change and read
-- at start, so that a restarted coordinator does not offer an address a machine still uses.
CREATE TABLE dhcp_leases (
    ip              TEXT PRIMARY KEY,
    mac             TEXT NOT NULL,
    -- `offered`, `bound` or `quarantined`.
    kind            TEXT NOT NULL,
    expires_at_ms   BIGINT NOT NULL
);
