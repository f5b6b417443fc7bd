CREATE INDEX settlements_person_year ON settlements (person_id, year);
