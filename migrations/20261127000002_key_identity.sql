-- Key identity: one address counter per key, not per encoding of the key.
--
-- An xpub's text also carries a version, a depth, a parent fingerprint and a child number;
-- the addresses depend only on its chain code and public key. Two encodings of one key had two
-- counters, so the second handed out indexes the first had already used. The allocator is now
-- keyed on `key_id`: lowercase hex of the 32-byte chain code followed by the 33-byte compressed
-- public key (what `AccountXpub::key_id` computes).

-- No allocation while the counters are rewritten: a create that allocated has committed its
-- session before this lock is granted, and a replica still on the old code waits, then fails
-- on the new table (it never hands out an index from a stale counter).
LOCK TABLE address_allocators IN ACCESS EXCLUSIVE MODE;

-- The key id of a base58check xpub: the 82-byte decoding is version (4), depth (1), parent
-- fingerprint (4), child number (4), chain code (32), key (33), checksum (4).
CREATE FUNCTION migration_xpub_key_id(xpub text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    alphabet CONSTANT text := '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
    n numeric := 0;
    digit integer;
    raw bytea := decode(repeat('00', 82), 'hex');
BEGIN
    IF xpub = '' OR left(xpub, 1) = '1' THEN
        RAISE EXCEPTION 'address_allocators: % is not an extended key', xpub;
    END IF;
    FOR i IN 1 .. length(xpub) LOOP
        digit := strpos(alphabet, substr(xpub, i, 1)) - 1;
        IF digit < 0 THEN
            RAISE EXCEPTION 'address_allocators: % is not base58', xpub;
        END IF;
        n := n * 58 + digit;
    END LOOP;
    FOR i IN REVERSE 81 .. 0 LOOP
        raw := set_byte(raw, i, mod(n, 256)::integer);
        n := div(n, 256);
    END LOOP;
    IF n <> 0 OR get_byte(raw, 0) = 0 THEN
        RAISE EXCEPTION 'address_allocators: % is not 82 bytes long', xpub;
    END IF;
    IF substr(sha256(sha256(substr(raw, 1, 78))), 1, 4) <> substr(raw, 79, 4) THEN
        RAISE EXCEPTION 'address_allocators: % has a wrong checksum', xpub;
    END IF;
    RETURN encode(substr(raw, 14, 65), 'hex');
END
$$;

CREATE TABLE address_allocators_by_key (
    chain_family  text NOT NULL
                  CONSTRAINT address_allocators_chain_family_check
                  CHECK (chain_family IN ('tron', 'evm', 'solana')),
    key_id        text NOT NULL
                  CONSTRAINT address_allocators_key_id_check CHECK (key_id ~ '^[0-9a-f]{130}$'),
    next_index    bigint NOT NULL
                  CONSTRAINT address_allocators_next_index_check
                  CHECK (next_index >= 0 AND next_index <= 2147483648),
    PRIMARY KEY (chain_family, key_id)
);

-- Encodings of one key merge: the next index is past every index any of them handed out,
-- and past every session on the key.
INSERT INTO address_allocators_by_key (chain_family, key_id, next_index)
SELECT chain_family, migration_xpub_key_id(xpub), max(next_index)
  FROM (SELECT chain_family, xpub, next_index FROM address_allocators
        UNION ALL
        SELECT chain_family, address_xpub, max(address_index) + 1
          FROM checkout_sessions GROUP BY chain_family, address_xpub) counters
 GROUP BY chain_family, migration_xpub_key_id(xpub);

DROP TABLE address_allocators;
ALTER TABLE address_allocators_by_key RENAME TO address_allocators;
ALTER TABLE address_allocators RENAME CONSTRAINT address_allocators_by_key_pkey
    TO address_allocators_pkey;
COMMENT ON TABLE address_allocators IS
    'Next child index per watch-only key (chain code + public key), whatever its encoding.';

DROP FUNCTION migration_xpub_key_id(text);
