-- Live status by notification: every change a payment page shows is announced in the
-- transaction that makes it (delivered at commit), so open pages need not poll.
--   checkout_session: the session's id, when its row or one of its transfers changes;
--   checkout_head:    'NETWORK:livemode', when a watcher reads a new head (confirmation counts).

CREATE FUNCTION notify_session_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Each branch is planned only when it runs: NEW has one of the two columns.
    IF TG_TABLE_NAME = 'checkout_sessions' THEN
        PERFORM pg_notify('checkout_session', NEW.id);
    ELSE
        PERFORM pg_notify('checkout_session', NEW.session_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER checkout_sessions_notify AFTER UPDATE ON checkout_sessions
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION notify_session_change();

CREATE TRIGGER transactions_notify AFTER INSERT OR UPDATE ON transactions
    FOR EACH ROW EXECUTE FUNCTION notify_session_change();

CREATE FUNCTION notify_head_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('checkout_head', NEW.network || ':' || NEW.livemode);
    RETURN NULL;
END
$$;

CREATE TRIGGER chain_cursors_notify AFTER UPDATE OF head_number ON chain_cursors
    FOR EACH ROW WHEN (OLD.head_number IS DISTINCT FROM NEW.head_number)
    EXECUTE FUNCTION notify_head_change();
