-- A bare-metal node's network as its deployed OS configures it (ports with addresses, VLANs
-- and bonds; routes; DNS), the API's document as JSON; NULL: none set.
ALTER TABLE bmcs ADD COLUMN network_json TEXT;
