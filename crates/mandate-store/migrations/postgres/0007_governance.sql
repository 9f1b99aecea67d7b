-- Owners say whether they are a team, a service or a person (a person may
-- not be the only owner of a production agent). Owners made before this
-- were teams.
ALTER TABLE owners ADD COLUMN kind TEXT NOT NULL DEFAULT 'team';

-- Rotation notices already raised (an overdue rotation per version, an
-- idle spell per last use), so each is announced once.
CREATE TABLE secret_notices (
    secret      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    marker      BIGINT NOT NULL,
    noticed_at  BIGINT NOT NULL,
    PRIMARY KEY (secret, kind, marker)
);
