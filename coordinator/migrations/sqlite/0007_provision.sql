-- A bare-metal node's provision state (NULL for agents); nodes enrolled by their BMC and
-- nodes found by network boot start in `enroll`.
ALTER TABLE nodes ADD COLUMN provision_state TEXT;
UPDATE nodes SET provision_state = 'enroll' WHERE role = 'baremetal';

-- MACs of nodes found by network boot (discovery), which have no BMC row yet.
CREATE TABLE discovered_macs (
    mac             TEXT PRIMARY KEY,
    node            TEXT NOT NULL REFERENCES nodes(name),
    at_ms           BIGINT NOT NULL
);
