-- Servers cache authenticated keys for a few seconds; a revocation is announced so that every
-- process forgets the key at once (the cache's lifetime bounds it if the announcement is lost).
CREATE FUNCTION notify_key_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('checkout_key_revoked', encode(NEW.key_hash, 'hex'));
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_notify_revoked AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
    EXECUTE FUNCTION notify_key_revoked();
