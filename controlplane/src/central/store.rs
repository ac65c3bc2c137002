//! The reference Central's storage: one SQLite database (rusqlite, bundled
//! SQLite) holding what Central shares (policy, feed settings, exclusions,
//! indicators, endpoint certificates), the journal of changes by revision,
//! enrolled gateways and their one-time tokens, and what gateways upload
//! (log events, health summaries).
//!
//! Every change is one transaction: the tables it touches, the journal entry
//! and the new revision commit together or not at all — with one exception,
//! made for speed: a batch of indicators (`indicators_add_lines`) commits as
//! its journal entry alone (one row, however many indicators), and its rows
//! in the `indicators` table are *materialised* later, in small transactions
//! ([`Store::materialize_step`], run by Central's background thread), in
//! revision order. `meta.materialized` is the last revision whose batch is in
//! the table; journal entries after it are never trimmed, and a restart
//! replays them (re-inserting a batch is idempotent), so a crash mid-way
//! loses nothing. Whatever reads or deletes indicator rows (snapshot, removal,
//! count) first sees the unmaterialised batches: the snapshot merges them in
//! memory, the others materialise them first ([`Store::catch_up`]).
//!
//! This module validates nothing (the server does, before calling it) and
//! never holds a secret in clear: tokens and gateway secrets are stored as
//! SHA-256.

use super::protocol::{
    Change, HeartbeatSettings, IndicatorLines, JournalEntry, LogEvent, Snapshot, WireEndpointCert, WireIndicator,
};
use hbgw_shared::indicators::ThreatFeedSettings;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::Path;

/// A storage error, one line.
#[derive(Debug, thiserror::Error)]
#[error("Central database: {0}")]
pub struct StoreError(String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}
impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// SHA-256 in hex (how tokens and secrets are stored).
pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The database.
pub struct Store {
    db: Connection,
    /// Journal entries kept.
    pub journal_keep: u64,
    /// The change body committed last, not yet taken ([`Store::take_committed`]).
    committed: Option<(u64, String)>,
    /// The batch being materialised: (revision, its lines, bytes of them done).
    progress: Option<(u64, String, usize)>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS indicators (audit_id TEXT PRIMARY KEY, value TEXT NOT NULL, feed TEXT NOT NULL, revision INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS indicators_value ON indicators(value);
CREATE TABLE IF NOT EXISTS endpoints (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, pem TEXT NOT NULL, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changes (revision INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, created INTEGER NOT NULL, used_by TEXT);
CREATE TABLE IF NOT EXISTS gateways (id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash TEXT NOT NULL, enrolled INTEGER NOT NULL, last_seen INTEGER, last_revision INTEGER);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, gateway TEXT NOT NULL, seq INTEGER NOT NULL, received INTEGER NOT NULL, body TEXT NOT NULL, UNIQUE(gateway, seq));
CREATE TABLE IF NOT EXISTS health (gateway TEXT PRIMARY KEY, received INTEGER NOT NULL, body TEXT NOT NULL);
";

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// An uploaded log event as the admin sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    /// Central's row id (for paging with `after`).
    pub id: i64,
    /// The gateway.
    pub gateway: String,
    /// The gateway's sequence number.
    pub seq: u64,
    /// Unix seconds received.
    pub received: i64,
    /// The record.
    pub record: serde_json::Value,
}

/// An enrolled gateway as the admin sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GatewayRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Unix seconds of enrollment.
    pub enrolled: i64,
    /// Unix seconds of its last request.
    pub last_seen: Option<i64>,
    /// The revision it last asked from.
    pub last_revision: Option<i64>,
}

/// Copies what the write-ahead log of the database at `path` holds into the
/// database, over a connection of its own: a passive checkpoint, which
/// never blocks a writer (the store's commits go on meanwhile).
/// Returns the frames in the log and how many of them are now in the
/// database.
pub fn checkpoint_aside(path: &Path) -> Result<(i64, i64), StoreError> {
    let db = Connection::open(path).map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
    Ok(db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))?)
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path).map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        db.execute_batch(SCHEMA)?;
        // No checkpoint at commit: copying the write-ahead log into the
        // database (and syncing it) would land on whichever commit crossed
        // the threshold, e.g. a posted batch on its way to the gateways.
        // [`checkpoint_aside`] does it from a background thread instead.
        db.pragma_update(None, "wal_autocheckpoint", 0)?;
        let s = Self { db, journal_keep: 100_000, committed: None, progress: None };
        if s.meta("materialized")?.is_none() {
            // A database from before batches were materialised apart: its
            // every change was applied when it committed.
            let rev = s.revision()?;
            s.db.execute("INSERT INTO meta (key, value) VALUES ('materialized', ?1)", [rev.to_string()])?;
        }
        Ok(s)
    }

    /// The last revision whose indicator batch is in the `indicators` table.
    pub fn materialized(&self) -> Result<u64, StoreError> {
        Ok(self.meta("materialized")?.and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    /// The revision and journal body of the change committed last (once).
    pub fn take_committed(&mut self) -> Option<(u64, String)> {
        self.committed.take()
    }

    /// Materialises up to `max_rows` indicators of the oldest batch not yet
    /// in the `indicators` table (in one transaction); true when more is left.
    pub fn materialize_step(&mut self, max_rows: usize) -> Result<bool, StoreError> {
        let (done, current) = (self.materialized()?, self.revision()?);
        if done >= current {
            self.progress = None;
            return Ok(false);
        }
        let rev = done + 1;
        if self.progress.as_ref().map_or(true, |(r, _, _)| *r != rev) {
            let body: Option<String> =
                self.db.query_row("SELECT body FROM changes WHERE revision = ?1", [rev as i64], |r| r.get(0)).optional()?;
            let body = body.ok_or_else(|| {
                StoreError(format!("journal entry {rev} is missing but not yet materialised: restore the database from a backup"))
            })?;
            let lines = match serde_json::from_str::<Change>(&body)? {
                Change::IndicatorsAddLines { lines } => lines,
                // Every other change was applied when it committed.
                _ => String::new(),
            };
            self.progress = Some((rev, lines, 0));
        }
        let Some((_, lines, offset)) = self.progress.as_mut() else { return Ok(false) };
        let rest = &lines[*offset..];
        let mut end = 0;
        let tx = self.db.transaction()?;
        {
            let mut st = tx.prepare_cached("INSERT OR REPLACE INTO indicators (audit_id, value, feed, revision) VALUES (?1, ?2, ?3, ?4)")?;
            for line in IndicatorLines::split(rest).take(max_rows) {
                let (v, a, f) = line.map_err(|e| StoreError(format!("journal entry {rev}: {e}")))?;
                st.execute(params![a, v, f, rev as i64])?;
                end += v.len() + a.len() + f.len() + 3;
            }
        }
        *offset += end;
        let finished = *offset >= lines.len();
        if finished {
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('materialized', ?1)", [rev.to_string()])?;
        }
        tx.commit()?;
        if finished {
            self.progress = None;
        }
        Ok(!finished || rev < current)
    }

    /// Materialises every batch not yet in the `indicators` table.
    pub fn catch_up(&mut self) -> Result<(), StoreError> {
        while self.materialize_step(50_000)? {}
        Ok(())
    }

    /// The current revision.
    pub fn revision(&self) -> Result<u64, StoreError> {
        let r: Option<String> = self.db.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| r.get(0)).optional()?;
        Ok(r.and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.db.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Commits one change: `apply` updates the tables inside the
    /// transaction, then the journal entry and revision are written.
    fn commit(
        &mut self,
        change: &Change,
        apply: impl FnOnce(&rusqlite::Transaction<'_>, u64) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let keep = self.journal_keep;
        let tx = self.db.transaction()?;
        let current: u64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rev = current + 1;
        apply(&tx, rev)?;
        let body = serde_json::to_string(change)?;
        tx.execute("INSERT INTO changes (revision, body) VALUES (?1, ?2)", params![rev as i64, body])?;
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?1)", [rev.to_string()])?;
        if rev > keep {
            // Never an entry whose batch is not yet materialised.
            let materialized: u64 = tx
                .query_row("SELECT value FROM meta WHERE key = 'materialized'", [], |r| r.get::<_, String>(0))
                .optional()?
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            tx.execute("DELETE FROM changes WHERE revision <= ?1", [(rev - keep).min(materialized) as i64])?;
        }
        tx.commit()?;
        self.committed = Some((rev, body));
        Ok(rev)
    }

    /// Adds (or replaces, by audit ID) indicators.
    pub fn add_indicators(&mut self, list: Vec<WireIndicator>) -> Result<u64, StoreError> {
        self.add_indicator_lines(IndicatorLines::from_wire(&list))
    }

    /// Adds (or replaces, by audit ID) a batch of indicators: one journal
    /// row; the table rows are materialised later ([`Store::materialize_step`]).
    pub fn add_indicator_lines(&mut self, lines: IndicatorLines) -> Result<u64, StoreError> {
        self.commit(&Change::IndicatorsAddLines { lines: lines.0 }, |_, _| Ok(()))
    }

    /// Audit IDs of indicators with one of these values.
    pub fn audit_ids_of_values(&mut self, values: &[String]) -> Result<Vec<String>, StoreError> {
        self.catch_up()?;
        let mut st = self.db.prepare("SELECT audit_id FROM indicators WHERE value = ?1")?;
        let mut out = Vec::new();
        for v in values {
            let ids = st.query_map([v], |r| r.get::<_, String>(0))?;
            for id in ids {
                out.push(id?);
            }
        }
        Ok(out)
    }

    /// Removes indicators by audit ID; returns the revision and how many
    /// existed (no revision is made when none did).
    pub fn remove_indicators(&mut self, audit_ids: Vec<String>) -> Result<(u64, usize), StoreError> {
        self.catch_up()?;
        let mut present = Vec::new();
        {
            let mut st = self.db.prepare("SELECT 1 FROM indicators WHERE audit_id = ?1")?;
            for a in audit_ids {
                if st.exists([&a])? {
                    present.push(a);
                }
            }
        }
        if present.is_empty() {
            return Ok((self.revision()?, 0));
        }
        let n = present.len();
        let change = Change::IndicatorsRemove { audit_ids: present.clone() };
        let rev = self.commit(&change, move |tx, _| {
            let mut st = tx.prepare("DELETE FROM indicators WHERE audit_id = ?1")?;
            for a in &present {
                st.execute([a])?;
            }
            Ok(())
        })?;
        Ok((rev, n))
    }

    /// Sets the policy text.
    pub fn set_policy(&mut self, text: String) -> Result<u64, StoreError> {
        let t = text.clone();
        self.commit(&Change::PolicySet { policy: text }, move |tx, _| {
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('policy', ?1)", [t])?;
            Ok(())
        })
    }

    /// Sets the feed settings.
    pub fn set_feed_settings(&mut self, settings: ThreatFeedSettings) -> Result<u64, StoreError> {
        let json = serde_json::to_string(&settings)?;
        self.commit(&Change::FeedSettingsSet { settings }, move |tx, _| {
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('feed_settings', ?1)", [json])?;
            Ok(())
        })
    }

    /// Sets the heartbeat settings.
    pub fn set_heartbeat(&mut self, settings: HeartbeatSettings) -> Result<u64, StoreError> {
        let json = serde_json::to_string(&settings)?;
        self.commit(&Change::HeartbeatSet { settings }, move |tx, _| {
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('heartbeat', ?1)", [json])?;
            Ok(())
        })
    }

    /// Sets the exclusion list.
    pub fn set_exclusions(&mut self, exclusions: Vec<String>) -> Result<u64, StoreError> {
        let json = serde_json::to_string(&exclusions)?;
        self.commit(&Change::ExclusionsSet { exclusions }, move |tx, _| {
            tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('exclusions', ?1)", [json])?;
            Ok(())
        })
    }

    /// Whether an endpoint of this name is registered.
    pub fn endpoint_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.db.prepare("SELECT 1 FROM endpoints WHERE name = ?1")?.exists([name])?)
    }

    /// Registers an endpoint certificate.
    pub fn add_endpoint(&mut self, cert: WireEndpointCert) -> Result<u64, StoreError> {
        let c = cert.clone();
        self.commit(&Change::EndpointCertAdd(cert), move |tx, rev| {
            tx.execute(
                "INSERT INTO endpoints (name, fingerprint, pem, revision) VALUES (?1, ?2, ?3, ?4)",
                params![c.name, c.fingerprint, c.pem, rev as i64],
            )?;
            Ok(())
        })
    }

    /// Deletes an endpoint; `None` when unknown.
    pub fn remove_endpoint(&mut self, name: &str) -> Result<Option<u64>, StoreError> {
        let fp: Option<String> =
            self.db.query_row("SELECT fingerprint FROM endpoints WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        let Some(fingerprint) = fp else { return Ok(None) };
        let n = name.to_owned();
        let rev = self.commit(&Change::EndpointCertRemove { fingerprint }, move |tx, _| {
            tx.execute("DELETE FROM endpoints WHERE name = ?1", [n])?;
            Ok(())
        })?;
        Ok(Some(rev))
    }

    /// Registered endpoints: (name, fingerprint).
    pub fn endpoints(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut st = self.db.prepare("SELECT name, fingerprint FROM endpoints ORDER BY name")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The changes after `since`, or `None` when the journal no longer
    /// holds all of them (or `since` is ahead of Central).
    pub fn changes_after(&self, since: u64) -> Result<Option<Vec<JournalEntry>>, StoreError> {
        let Some(rows) = self.journal_after(since)? else { return Ok(None) };
        let mut out = Vec::with_capacity(rows.len());
        for (revision, body) in rows {
            out.push(JournalEntry { revision, change: serde_json::from_str(&body)? });
        }
        Ok(Some(out))
    }

    /// The `GET /v1/sync` answer (a [`super::protocol::SyncAnswer`] with
    /// `changes`) for a gateway at `since`, as JSON, written around the
    /// journal's stored change bodies (Central wrote them; a 100,000-indicator
    /// change is not parsed and re-serialised to be sent); `None` as for
    /// [`Store::changes_after`].
    pub fn sync_answer_json(&self, since: u64, version: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let revision = self.revision()?;
        let Some(mut rows) = self.journal_after(since)? else { return Ok(None) };
        if version < 2 {
            for (_, body) in rows.iter_mut() {
                if body.contains("\"indicators_add_lines\"") {
                    let change: Change = serde_json::from_str(body)?;
                    *body = serde_json::to_string(&change.to_v1().map_err(|e| StoreError(e.to_string()))?)?;
                }
            }
        }
        Ok(Some(answer_around(revision, rows.iter().map(|(r, b)| (*r, b.as_str())))))
    }
}

/// A `GET /v1/sync` answer with `changes`, written around the changes'
/// stored JSON bodies.
pub fn answer_around<'a>(revision: u64, rows: impl Iterator<Item = (u64, &'a str)>) -> Vec<u8> {
    let rows: Vec<(u64, &str)> = rows.collect();
    let mut out = Vec::with_capacity(rows.iter().map(|(_, b)| b.len() + 32).sum::<usize>() + 64);
    out.extend_from_slice(format!("{{\"revision\":{revision},\"changes\":[").as_bytes());
    for (i, (r, body)) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("{{\"revision\":{r},\"change\":").as_bytes());
        out.extend_from_slice(body.as_bytes());
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

impl Store {
    /// The journal's (revision, change JSON) after `since`; `None` as for
    /// [`Store::changes_after`].
    fn journal_after(&self, since: u64) -> Result<Option<Vec<(u64, String)>>, StoreError> {
        let current = self.revision()?;
        if since > current || since == 0 {
            return Ok(None);
        }
        if since == current {
            return Ok(Some(Vec::new()));
        }
        let oldest: Option<i64> = self.db.query_row("SELECT MIN(revision) FROM changes", [], |r| r.get(0))?;
        match oldest {
            Some(o) if o as u64 <= since + 1 => {}
            _ => return Ok(None),
        }
        let mut st = self.db.prepare("SELECT revision, body FROM changes WHERE revision > ?1 ORDER BY revision")?;
        let rows = st.query_map([since as i64], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)))?;
        Ok(Some(rows.collect::<Result<Vec<_>, _>>()?))
    }

    /// Everything, at the current revision.
    pub fn snapshot(&self) -> Result<(u64, Snapshot), StoreError> {
        let revision = self.revision()?;
        let feed_settings = match self.meta("feed_settings")? {
            Some(j) => serde_json::from_str(&j)?,
            None => ThreatFeedSettings::default(),
        };
        let exclusions = match self.meta("exclusions")? {
            Some(j) => serde_json::from_str(&j)?,
            None => Vec::new(),
        };
        let mut st = self.db.prepare("SELECT value, audit_id, feed FROM indicators")?;
        let mut indicators = st
            .query_map([], |r| Ok(WireIndicator { value: r.get(0)?, audit_id: r.get(1)?, feed: r.get(2)? }))?
            .collect::<Result<Vec<_>, _>>()?;
        self.merge_unmaterialized(&mut indicators)?;
        let mut st = self.db.prepare("SELECT name, fingerprint, pem FROM endpoints ORDER BY name")?;
        let endpoint_certs = st
            .query_map([], |r| Ok(WireEndpointCert { name: r.get(0)?, fingerprint: r.get(1)?, pem: r.get(2)? }))?
            .collect::<Result<Vec<_>, _>>()?;
        let heartbeat = match self.meta("heartbeat")? {
            Some(j) => Some(serde_json::from_str(&j)?),
            None => None,
        };
        Ok((revision, Snapshot { policy: self.meta("policy")?, feed_settings, exclusions, indicators, endpoint_certs, heartbeat }))
    }

    /// Adds to `rows` (the `indicators` table) the batches not yet
    /// materialised, as materialising them would: a later audit ID replaces
    /// an earlier one.
    fn merge_unmaterialized(&self, rows: &mut Vec<WireIndicator>) -> Result<(), StoreError> {
        let done = self.materialized()?;
        let mut st = self.db.prepare("SELECT body FROM changes WHERE revision > ?1 ORDER BY revision")?;
        let bodies = st.query_map([done as i64], |r| r.get::<_, String>(0))?;
        let mut pending: Vec<WireIndicator> = Vec::new();
        for body in bodies {
            if let Change::IndicatorsAddLines { lines } = serde_json::from_str::<Change>(&body?)? {
                pending.extend(IndicatorLines(lines).to_wire().map_err(|e| StoreError(e.to_string()))?);
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let mut last: rustc_hash::FxHashMap<&str, usize> = rustc_hash::FxHashMap::default();
        for (n, i) in pending.iter().enumerate() {
            last.insert(i.audit_id.as_str(), n);
        }
        rows.retain(|r| !last.contains_key(r.audit_id.as_str()));
        let keep: Vec<bool> = pending.iter().enumerate().map(|(n, i)| last.get(i.audit_id.as_str()) == Some(&n)).collect();
        drop(last);
        rows.extend(pending.into_iter().zip(keep).filter(|(_, k)| *k).map(|(i, _)| i));
        Ok(())
    }

    /// Number of indicators held.
    pub fn indicator_count(&mut self) -> Result<u64, StoreError> {
        self.catch_up()?;
        Ok(self.db.query_row("SELECT COUNT(*) FROM indicators", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Stores a new enrollment token (by hash).
    pub fn add_token(&mut self, token: &str) -> Result<(), StoreError> {
        self.db.execute("INSERT INTO tokens (hash, created) VALUES (?1, ?2)", params![sha256_hex(token), now_s()])?;
        Ok(())
    }

    /// Uses a token to enroll a gateway; false when the token is unknown or used.
    pub fn enroll(&mut self, token: &str, id: &str, name: &str, secret: &str) -> Result<bool, StoreError> {
        let tx = self.db.transaction()?;
        let n = tx.execute(
            "UPDATE tokens SET used_by = ?1 WHERE hash = ?2 AND used_by IS NULL",
            params![id, sha256_hex(token)],
        )?;
        if n != 1 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO gateways (id, name, secret_hash, enrolled) VALUES (?1, ?2, ?3, ?4)",
            params![id, name, sha256_hex(secret), now_s()],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Checks a gateway's credential (`ID.SECRET`); returns the id.
    pub fn authenticate(&self, bearer: &str) -> Result<Option<String>, StoreError> {
        let Some((id, secret)) = bearer.split_once('.') else { return Ok(None) };
        let hash: Option<String> =
            self.db.query_row("SELECT secret_hash FROM gateways WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        Ok(hash.filter(|h| *h == sha256_hex(secret)).map(|_| id.to_owned()))
    }

    /// Records a gateway's request.
    pub fn touch(&self, id: &str, revision: Option<u64>) -> Result<(), StoreError> {
        match revision {
            Some(r) => self.db.execute(
                "UPDATE gateways SET last_seen = ?1, last_revision = ?2 WHERE id = ?3",
                params![now_s(), r as i64, id],
            )?,
            None => self.db.execute("UPDATE gateways SET last_seen = ?1 WHERE id = ?2", params![now_s(), id])?,
        };
        Ok(())
    }

    /// Enrolled gateways.
    pub fn gateways(&self) -> Result<Vec<GatewayRow>, StoreError> {
        let mut st = self.db.prepare("SELECT id, name, enrolled, last_seen, last_revision FROM gateways ORDER BY enrolled")?;
        let rows = st.query_map([], |r| {
            Ok(GatewayRow { id: r.get(0)?, name: r.get(1)?, enrolled: r.get(2)?, last_seen: r.get(3)?, last_revision: r.get(4)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores uploaded events once each; returns (accepted, duplicates).
    pub fn add_events(&mut self, gateway: &str, events: &[LogEvent]) -> Result<(u64, u64), StoreError> {
        let tx = self.db.transaction()?;
        let mut accepted = 0;
        {
            let mut st = tx.prepare("INSERT OR IGNORE INTO events (gateway, seq, received, body) VALUES (?1, ?2, ?3, ?4)")?;
            let now = now_s();
            for e in events {
                accepted += st.execute(params![gateway, e.seq as i64, now, e.record.to_string()])? as u64;
            }
        }
        tx.commit()?;
        Ok((accepted, events.len() as u64 - accepted))
    }

    /// Uploaded events after row id `after`, oldest first.
    pub fn events(&self, after: i64, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let mut st = self.db.prepare("SELECT id, gateway, seq, received, body FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let rows = st.query_map(params![after, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get::<_, String>(4)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, gateway, seq, received, body) = row?;
            out.push(StoredEvent { id, gateway, seq: seq as u64, received, record: serde_json::from_str(&body)? });
        }
        Ok(out)
    }

    /// Stores a gateway's latest health summary.
    pub fn put_health(&self, gateway: &str, body: &serde_json::Value) -> Result<(), StoreError> {
        self.db.execute(
            "INSERT OR REPLACE INTO health (gateway, received, body) VALUES (?1, ?2, ?3)",
            params![gateway, now_s(), body.to_string()],
        )?;
        Ok(())
    }

    /// Every gateway's latest health summary.
    pub fn health(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut st = self.db.prepare("SELECT gateway, received, body FROM health ORDER BY gateway")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (gateway, received, body) = row?;
            out.push(serde_json::json!({"gateway": gateway, "received": received, "summary": serde_json::from_str::<serde_json::Value>(&body)?}));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ind(v: &str, a: &str) -> WireIndicator {
        WireIndicator { value: v.into(), audit_id: a.into(), feed: "mdr".into() }
    }

    #[test]
    fn commits_leave_the_log_to_the_checkpoint_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut s = Store::open(&path).unwrap();
        let wal = || std::fs::metadata(dir.path().join("c.db-wal")).map_or(0, |m| m.len());
        let big: Vec<WireIndicator> = (0..20_000).map(|i| ind(&format!("10.0.{}.{}", i / 250, i % 250), &format!("A{i}"))).collect();
        for _ in 0..12 {
            s.add_indicators(big.clone()).unwrap();
        }
        // Past SQLite's default threshold (1000 pages), and still in the log.
        assert!(wal() > 4096 * 1000, "{} bytes of log", wal());
        let (log, done) = checkpoint_aside(&path).unwrap();
        assert!(log > 1000 && done == log, "{done} of {log} frames checkpointed");
        // The store writes on (the log is reused from its start).
        let before = wal();
        s.add_indicators(vec![ind("203.0.113.9", "Z")]).unwrap();
        assert_eq!(wal(), before);
        assert_eq!(s.revision().unwrap(), 13);
    }

    #[test]
    fn journal_serves_deltas_until_trimmed_then_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("c.db")).unwrap();
        s.journal_keep = 3;
        assert_eq!(s.add_indicators(vec![ind("203.0.113.9", "A1")]).unwrap(), 1);
        assert_eq!(s.add_indicators(vec![ind("evil.example", "A2")]).unwrap(), 2);
        assert_eq!(s.changes_after(1).unwrap().unwrap().len(), 1);
        assert_eq!(s.remove_indicators(vec!["A1".into(), "nope".into()]).unwrap(), (3, 1));
        assert_eq!(s.remove_indicators(vec!["nope".into()]).unwrap(), (3, 0));
        s.set_exclusions(vec!["10.0.0.0/8".into()]).unwrap();
        s.set_policy("default_action = \"accept\"\n".into()).unwrap();
        assert_eq!(s.revision().unwrap(), 5);
        assert!(s.changes_after(1).unwrap().is_none(), "revision 2 was trimmed");
        let d = s.changes_after(2).unwrap().unwrap();
        assert_eq!(d.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(s.changes_after(5).unwrap().unwrap().is_empty());
        // The answer written around the stored bodies is the answer serde would write.
        let raw = s.sync_answer_json(2, 2).unwrap().unwrap();
        let parsed: super::super::protocol::SyncAnswer = serde_json::from_slice(&raw).unwrap();
        assert_eq!(parsed, super::super::protocol::SyncAnswer { revision: 5, changes: Some(d.clone()), snapshot: None });
        assert_eq!(raw, serde_json::to_vec(&parsed).unwrap());
        assert_eq!(s.sync_answer_json(5, 2).unwrap().unwrap(), br#"{"revision":5,"changes":[]}"#);
        assert!(s.sync_answer_json(1, 2).unwrap().is_none());
        assert!(s.changes_after(9).unwrap().is_none(), "a gateway ahead of Central gets a snapshot");
        let (rev, snap) = s.snapshot().unwrap();
        assert_eq!(rev, 5);
        assert_eq!(snap.indicators, vec![ind("evil.example", "A2")]);
        assert_eq!(snap.exclusions, vec!["10.0.0.0/8".to_owned()]);
        assert!(snap.policy.is_some());
    }

    /// A batch commits as one journal row; its table rows come later, a
    /// few per step, and a Central reopened mid-way (a crash) finishes them.
    /// Until then the snapshot merges the batch in, and removal and counts
    /// materialise it first.
    #[test]
    fn batches_are_materialised_apart_and_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let mut s = Store::open(&path).unwrap();
        s.journal_keep = 1;
        s.add_indicators(vec![ind("10.0.0.1", "A"), ind("10.0.0.2", "B")]).unwrap();
        let batch: Vec<WireIndicator> = (0..10).map(|i| ind(&format!("10.1.0.{i}"), &format!("N{i}"))).chain([ind("10.9.9.9", "A")]).collect();
        assert_eq!(s.add_indicators(batch).unwrap(), 2);
        assert_eq!(s.materialized().unwrap(), 0);
        let (_, snap) = s.snapshot().unwrap();
        assert_eq!(snap.indicators.len(), 12);
        assert!(snap.indicators.contains(&ind("10.9.9.9", "A")) && !snap.indicators.contains(&ind("10.0.0.1", "A")));
        // Revision 1 done, revision 2 half done: then a "crash".
        assert!(s.materialize_step(100).unwrap());
        assert!(s.materialize_step(4).unwrap());
        assert_eq!(s.materialized().unwrap(), 1);
        // The journal keeps what is not materialised, whatever journal_keep says.
        s.set_exclusions(vec![]).unwrap();
        assert_eq!(s.changes_after(1).unwrap().unwrap().len(), 2);
        drop(s);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.materialized().unwrap(), 1);
        while s.materialize_step(3).unwrap() {}
        assert_eq!(s.materialized().unwrap(), 3);
        let (_, again) = s.snapshot().unwrap();
        let sorted = |mut v: Vec<WireIndicator>| {
            v.sort_by(|a, b| a.audit_id.cmp(&b.audit_id));
            v
        };
        assert_eq!(sorted(again.indicators), sorted(snap.indicators));
        assert_eq!(s.remove_indicators(vec!["N3".into()]).unwrap(), (4, 1));
        assert_eq!(s.indicator_count().unwrap(), 11);
        // A version-1 gateway gets the batch as `indicators_add`.
        let v1 = s.sync_answer_json(3, 1).unwrap();
        assert!(v1.is_none() || !String::from_utf8(v1.unwrap()).unwrap().contains("indicators_add_lines"));
    }

    #[test]
    fn version_1_answers_expand_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("c.db")).unwrap();
        s.add_indicators(vec![ind("203.0.113.9", "A1")]).unwrap();
        s.add_indicators(vec![ind("evil.example", "A2"), ind("http://x.example/p", "A3")]).unwrap();
        let v1: super::super::protocol::SyncAnswer = serde_json::from_slice(&s.sync_answer_json(1, 1).unwrap().unwrap()).unwrap();
        assert_eq!(
            v1.changes.unwrap()[0].change,
            Change::IndicatorsAdd { indicators: vec![ind("evil.example", "A2"), ind("http://x.example/p", "A3")] }
        );
        let v2 = String::from_utf8(s.sync_answer_json(1, 2).unwrap().unwrap()).unwrap();
        assert!(v2.contains(r#"{"op":"indicators_add_lines","lines":"evil.example\tA2\tmdr\nhttp://x.example/p\tA3\tmdr\n"}"#), "{v2}");
    }

    #[test]
    fn tokens_work_once_and_events_are_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("c.db")).unwrap();
        s.add_token("tok").unwrap();
        assert!(s.enroll("tok", "gw-1", "branch", "sec").unwrap());
        assert!(!s.enroll("tok", "gw-2", "branch", "sec").unwrap());
        assert_eq!(s.authenticate("gw-1.sec").unwrap().as_deref(), Some("gw-1"));
        assert_eq!(s.authenticate("gw-1.wrong").unwrap(), None);
        let ev = |seq| LogEvent { seq, record: serde_json::json!({"n": seq}) };
        assert_eq!(s.add_events("gw-1", &[ev(1), ev(2)]).unwrap(), (2, 0));
        assert_eq!(s.add_events("gw-1", &[ev(2), ev(3)]).unwrap(), (1, 1));
        assert_eq!(s.events(0, 100).unwrap().len(), 3);
    }
}
