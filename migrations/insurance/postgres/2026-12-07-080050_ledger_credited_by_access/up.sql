-- Who credited each contribution (the partner id), so an employer reads only the contributions
-- it paid in itself (docs/architecture.md#trust-model: an employer sees its own contribution
-- entries, nothing else). Only contributions carry it; entries from before are contributions of no
-- known partner.
ALTER TABLE account_entries ADD COLUMN credited_by TEXT
    CONSTRAINT account_entries_credited_by_contribution
    CHECK (credited_by IS NULL OR (kind = 'CONTRIBUTION' AND length(credited_by) BETWEEN 1 AND 64));
