-- The watcher asks the node only for transfers to watched pay addresses: open sessions', and
-- closed ones' for a while after expires_at (late payments). This index finds the latter.
CREATE INDEX sessions_watched_by_network ON checkout_sessions (network, livemode, expires_at);
