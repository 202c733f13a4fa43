//! The tables and the append function, as embedded migrations recorded in
//! `chat_migrations`.

use deadpool_postgres::Client;

use crate::store::PgError;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only: a released
/// migration never changes.
///
/// `cid` and `body` are `bytea` (UTF-8 bytes): PostgreSQL's `text` cannot hold U+0000,
/// which protocol v1 allows in both.
const MIGRATIONS: &[&str] = &[
    // 1: rooms with their sequencer, the logs, members, cursors, and the append function.
    r#"
CREATE TABLE rooms (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE,
    epoch text NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE messages (
    room bigint NOT NULL REFERENCES rooms (id),
    seq bigint NOT NULL,
    sender text COLLATE "C" NOT NULL,
    cid bytea NOT NULL,
    body bytea NOT NULL,
    meta text,
    ts bigint NOT NULL,
    PRIMARY KEY (room, seq)
);
CREATE UNIQUE INDEX messages_by_cid ON messages (room, sender, cid);
CREATE TABLE members (
    room bigint NOT NULL REFERENCES rooms (id),
    user_id text COLLATE "C" NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room, user_id)
);
CREATE INDEX members_by_user ON members (user_id, room);
CREATE TABLE cursors (
    room bigint NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    delivered bigint NOT NULL DEFAULT 0,
    read bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (room, user_id),
    FOREIGN KEY (room, user_id) REFERENCES members (room, user_id) ON DELETE CASCADE
);

-- Appends a batch in one transaction. Row k of the result answers input k:
-- status 0 = no such room, 1 = appended at out_seq, 2 = a retry of the stored message
-- (out_seq, out_body, out_meta, out_ts).
-- Every room of the batch is locked first (FOR NO KEY UPDATE: joins, whose foreign keys
-- only share-lock the room, need not wait), in id order, so that concurrent batches (from
-- any number of processes) queue on each room's row instead of deadlocking; under that
-- lock the idempotency lookup and the next seq see every committed append.
CREATE FUNCTION chat_append(
    p_rooms text[], p_senders text[], p_cids bytea[], p_bodies bytea[],
    p_metas text[], p_ts bigint[]
) RETURNS TABLE (
    idx integer, status smallint, out_seq bigint, out_body bytea, out_meta text, out_ts bigint
) LANGUAGE plpgsql AS $fn$
DECLARE
    v_room bigint;
    v_seq bigint;
BEGIN
    PERFORM 1 FROM rooms r WHERE r.name = ANY (p_rooms) ORDER BY r.id FOR NO KEY UPDATE;
    FOR k IN 1 .. coalesce(array_length(p_rooms, 1), 0) LOOP
        idx := k;
        out_seq := NULL; out_body := NULL; out_meta := NULL; out_ts := NULL;
        SELECT r.id, r.last_seq INTO v_room, v_seq FROM rooms r WHERE r.name = p_rooms[k];
        IF NOT FOUND THEN
            status := 0;
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT m.seq, m.body, m.meta, m.ts INTO out_seq, out_body, out_meta, out_ts
            FROM messages m
            WHERE m.room = v_room AND m.sender = p_senders[k] AND m.cid = p_cids[k];
        IF FOUND THEN
            status := 2;
            RETURN NEXT;
            CONTINUE;
        END IF;
        v_seq := v_seq + 1;
        INSERT INTO messages (room, seq, sender, cid, body, meta, ts)
            VALUES (v_room, v_seq, p_senders[k], p_cids[k], p_bodies[k], p_metas[k], p_ts[k]);
        UPDATE rooms SET last_seq = v_seq WHERE id = v_room;
        status := 1;
        out_seq := v_seq;
        RETURN NEXT;
    END LOOP;
END
$fn$;
"#,
];

/// The schema version this build writes.
pub(crate) const VERSION: usize = MIGRATIONS.len();

/// Applies the missing migrations in one transaction, under a transaction-scoped advisory
/// lock per schema. Refuses a database whose schema is newer than this build.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), String> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| format!("begin migration: {}", PgError::from(e)))?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtext('chat-engine migrations ' || current_schema()));
         CREATE TABLE IF NOT EXISTS chat_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(|e| format!("lock and record migrations: {}", PgError::from(e)))?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM chat_migrations", &[])
        .await
        .map_err(|e| format!("read schema version: {}", PgError::from(e)))?;
    let version = usize::try_from(row.get::<_, i32>(0)).unwrap_or(usize::MAX);
    if version > VERSION {
        return Err(format!(
            "the database has schema version {version}; this build knows up to {VERSION}"
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql)
            .await
            .map_err(|e| format!("migration {number}: {}", PgError::from(e)))?;
        tx.execute(
            "INSERT INTO chat_migrations (version) VALUES ($1)",
            &[&number],
        )
        .await
        .map_err(|e| format!("record migration {number}: {}", PgError::from(e)))?;
    }
    tx.commit()
        .await
        .map_err(|e| format!("commit migration: {}", PgError::from(e)))
}
