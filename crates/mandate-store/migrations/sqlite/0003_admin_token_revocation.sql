-- Admin tokens can be revoked; the row stays for the record.
ALTER TABLE admin_tokens ADD COLUMN revoked_at INTEGER;
