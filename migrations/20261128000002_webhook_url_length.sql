-- An endpoint URL is at most 2,048 characters as sent; it is stored normalized, which can be
-- longer (a `/` for an empty path, percent-encoding, punycode). The column allows for that.
ALTER TABLE webhook_endpoints DROP CONSTRAINT webhook_endpoints_url_check;
ALTER TABLE webhook_endpoints ADD CONSTRAINT webhook_endpoints_url_check CHECK (length(url) <= 8192);
