-- A cascade ends a whole subtree with one UPDATE of the state and this
-- column, without rewriting each task's JSON body; reads lay the state
-- and end time columns over the body. NULL: the body's own `ended_at`.
ALTER TABLE tasks ADD COLUMN ended_at BIGINT;
