-- Delegation: a task handed down by another task names its parent, so a
-- cascade finds the whole subtree in one recursive query.
ALTER TABLE tasks ADD COLUMN parent TEXT REFERENCES tasks(id);
CREATE INDEX tasks_by_parent ON tasks(parent) WHERE parent IS NOT NULL;
