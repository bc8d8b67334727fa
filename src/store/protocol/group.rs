//! Group commit for the protocol store.
//!
//! The client library writes each session's Signal state, sent messages,
//! message secrets and pending inbound messages as it goes: a few small
//! writes per message, each awaited. Written one by one on pooled
//! connections, each costs a transaction (a disk sync on Postgres) and the
//! pool's ping when its connection goes back. The group writer instead
//! takes every write the node's sessions asked for while it committed the
//! last batch, merges the rows that different sessions give the same
//! statement into one multi-row statement, and commits the batch in one
//! transaction. On Postgres it keeps a connection of its own (tagged like
//! the pool's, so a fence cuts it too) and never pings it; on SQLite it
//! takes the one writer connection for each batch. A lone write goes at
//! once; nothing waits on a timer.
//!
//! A caller waits until its writes are committed, so each is as durable
//! when the call returns as it was written alone. A session's writes keep
//! their order, and a job (the writes of one call, such as the inbound
//! messages staged in memory and the Signal state that decrypted them) is
//! atomic. When a batch fails as a whole, each job is tried again alone,
//! so one bad job fails only its own caller.

use std::sync::Arc;

use bytes::Bytes;
use sqlx::Any;
use wacore::store::error::StoreError as WaError;

use super::{MAX_PARAMS, Rows, SessionId, db_error};
use crate::store::batch::row_placeholders;
use crate::store::link::{Asked, Batch, Batcher, Link, Source, begin_write, is_broken};
use crate::store::{DbKind, Revocation, WriteFence};

/// Rows committed together at most (a job is never split).
const MAX_BATCH_ROWS: usize = 4096;

/// One value of a row.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Text(String),
    Blob(Bytes),
    Int(i64),
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_owned())
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<&[u8]> for Value {
    fn from(blob: &[u8]) -> Self {
        Value::Blob(Bytes::copy_from_slice(blob))
    }
}

impl From<Bytes> for Value {
    fn from(blob: Bytes) -> Self {
        Value::Blob(blob)
    }
}

/// Rows for one statement: each row the statement's `width` values, after
/// the session id, which every row carries.
pub(super) struct Write {
    pub statement: &'static Rows,
    pub rows: Vec<Vec<Value>>,
}

struct Job {
    session: SessionId,
    writes: Vec<Write>,
    revoked: Revocation,
}

impl Job {
    fn rows(&self) -> usize {
        self.writes.iter().map(|w| w.rows.len()).sum()
    }
}

/// The handle the sessions' stores write through (see [`Batcher`]).
pub(crate) struct GroupWriter(Batcher<Writer>);

impl GroupWriter {
    pub(crate) fn start(source: Source, kind: DbKind, fence: Arc<WriteFence>) -> Self {
        GroupWriter(Batcher::start(Writer { kind }, Link::new(source, fence)))
    }

    /// Commits `writes` of `session` with whatever else is waiting; answers
    /// once they are committed.
    pub(super) async fn write(
        &self,
        session: SessionId,
        revoked: Revocation,
        writes: Vec<Write>,
    ) -> Result<(), WaError> {
        let job = Job {
            session,
            writes,
            revoked,
        };
        self.0.ask(job).await.unwrap_or_else(|| Err(stopped()))
    }

    /// Ends the task and closes its connection; what is queued fails.
    pub(crate) fn close(&self) {
        self.0.close();
    }
}

fn stopped() -> WaError {
    WaError::Connection(Box::new(std::io::Error::other(
        "the protocol store's writer has stopped",
    )))
}

fn revoked() -> WaError {
    WaError::Connection(Box::new(std::io::Error::other(
        "the session stopped or was fenced off; its store writes nothing more",
    )))
}

/// The task's side: the database's dialect.
struct Writer {
    kind: DbKind,
}

impl Batch for Writer {
    type Ask = Job;
    type Answer = Result<(), WaError>;
    const MOST: usize = MAX_BATCH_ROWS;

    fn weight(job: &Job) -> usize {
        job.rows()
    }

    /// Commits `batch` and answers its callers.
    async fn commit(&mut self, link: &mut Link, batch: Vec<Asked<Self>>) {
        let (batch, gone): (Vec<Asked<Self>>, Vec<_>) = batch
            .into_iter()
            .partition(|(job, _)| !job.revoked.is_revoked());
        for (_, done) in gone {
            let _ = done.send(Err(revoked()));
        }
        let (jobs, answers): (Vec<Job>, Vec<_>) = batch.into_iter().unzip();
        if jobs.len() > 1 {
            match self.write(link, &jobs).await {
                Ok(()) => {
                    for done in answers {
                        let _ = done.send(Ok(()));
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, jobs = jobs.len(),
                        "a batch of protocol store writes failed; trying each job alone");
                }
            }
        }
        for (job, done) in jobs.iter().zip(answers) {
            let _ = done.send(self.write(link, std::slice::from_ref(job)).await);
        }
    }
}

impl Writer {
    /// Writes `jobs` in one transaction (a single statement goes alone).
    /// A write that finds the connection broken is tried once more on a
    /// new one: every statement here may run twice with the same result.
    async fn write(&self, link: &mut Link, jobs: &[Job]) -> Result<(), WaError> {
        let statements = merge(jobs);
        match self.try_write(link, &statements).await {
            Err(e) if is_broken(&e) => self.try_write(link, &statements).await.map_err(db_error),
            written => written.map_err(db_error),
        }
    }

    async fn try_write(
        &self,
        link: &mut Link,
        statements: &[Statement<'_>],
    ) -> Result<(), sqlx::Error> {
        let kind = self.kind;
        let mut conn = link.connection().await?;
        let conn = conn.get();
        let written = async {
            if let [single] = statements {
                return single.query().execute(&mut *conn).await.map(drop);
            }
            let mut tx = begin_write(conn, kind).await?;
            for statement in statements {
                statement.query().execute(&mut *tx).await?;
            }
            tx.commit().await
        }
        .await;
        link.check(&written);
        written
    }
}

/// One statement of a batch: rows of different sessions for one [`Rows`].
struct Statement<'a> {
    statement: &'static Rows,
    rows: Vec<(&'a SessionId, &'a [Value])>,
    sql: String,
}

impl Statement<'_> {
    fn query(&self) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments<'_>> {
        let per_row = self.statement.width + 1;
        let cached = self.rows.len() <= 4 || self.rows.len() == rows_per_statement(per_row);
        let query = sqlx::query(&self.sql).persistent(cached);
        self.rows.iter().fold(query, |query, (session, values)| {
            values
                .iter()
                .fold(query.bind(session.as_str()), |query, value| match value {
                    Value::Text(text) => query.bind(text.as_str()),
                    Value::Blob(blob) => query.bind(blob.as_ref()),
                    Value::Int(n) => query.bind(*n),
                })
        })
    }
}

fn rows_per_statement(per_row: usize) -> usize {
    (MAX_PARAMS / per_row).max(1)
}

/// The statements that write `jobs`, in an order that keeps each session's
/// writes in theirs: a session's write joins an earlier statement for the
/// same [`Rows`] only if that one comes after the session's last write and
/// holds no row of the session yet (rows of one session may name the same
/// key, which one Postgres upsert cannot take twice). Rows of different
/// sessions never share a key: the session id is part of every key.
fn merge(jobs: &[Job]) -> Vec<Statement<'_>> {
    struct Group<'a> {
        statement: &'static Rows,
        rows: Vec<(&'a SessionId, &'a [Value])>,
    }
    let mut groups: Vec<Group> = Vec::new();
    // Each session's last group, by its position in `groups`.
    let mut last: Vec<(&SessionId, usize)> = Vec::new();
    for job in jobs {
        let session = &job.session;
        for write in job.writes.iter().filter(|w| !w.rows.is_empty()) {
            let after = last.iter().find(|(s, _)| *s == session).map(|(_, at)| *at);
            let start = after.map_or(0, |at| at + 1);
            let joined = groups
                .iter()
                .enumerate()
                .skip(start)
                .find(|(_, g)| {
                    std::ptr::eq(g.statement, write.statement)
                        && !g.rows.iter().any(|(s, _)| *s == session)
                })
                .map(|(at, _)| at);
            let at = joined.unwrap_or_else(|| {
                groups.push(Group {
                    statement: write.statement,
                    rows: Vec::new(),
                });
                groups.len() - 1
            });
            groups[at]
                .rows
                .extend(write.rows.iter().map(|row| (session, row.as_slice())));
            match last.iter_mut().find(|(s, _)| *s == session) {
                Some(entry) => entry.1 = at,
                None => last.push((session, at)),
            }
        }
    }
    let mut statements = Vec::new();
    for group in groups {
        let per_row = group.statement.width + 1;
        for chunk in group.rows.chunks(rows_per_statement(per_row)) {
            let sql = format!(
                "{}{}{}",
                group.statement.head,
                row_placeholders(1, chunk.len(), per_row),
                group.statement.tail
            );
            statements.push(Statement {
                statement: group.statement,
                rows: chunk.to_vec(),
                sql,
            });
        }
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Rows = super::super::rows!("INSERT INTO a (session_id, k, v) VALUES ", "", 2);
    const B: Rows = super::super::rows!("INSERT INTO b (session_id, k, v) VALUES ", "", 2);

    fn job(session: &str, writes: Vec<(&'static Rows, i64)>) -> Job {
        Job {
            session: SessionId::from_raw(session),
            writes: writes
                .into_iter()
                .map(|(statement, k)| Write {
                    statement,
                    rows: vec![vec![Value::Int(k), Value::Int(0)]],
                })
                .collect(),
            revoked: Revocation::default(),
        }
    }

    fn shape(statements: &[Statement]) -> Vec<(String, Vec<String>)> {
        statements
            .iter()
            .map(|s| {
                let table = s.statement.head.split_whitespace().nth(2).unwrap();
                let rows = s
                    .rows
                    .iter()
                    .map(|(session, values)| match values[0] {
                        Value::Int(k) => format!("{session}:{k}"),
                        _ => unreachable!(),
                    })
                    .collect();
                (table.to_owned(), rows)
            })
            .collect()
    }

    #[test]
    fn sessions_share_statements_and_each_keeps_its_order() {
        let jobs = [
            job("s1", vec![(&A, 1), (&B, 2)]),
            job("s2", vec![(&A, 3)]),
            // s1 again: its second write to A must follow its write to B.
            job("s1", vec![(&A, 4)]),
            job("s3", vec![(&B, 5), (&A, 6)]),
        ];
        let merged = merge(&jobs);
        let expect = |t: &str, rows: &[&str]| {
            (
                t.to_owned(),
                rows.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            shape(&merged),
            [
                expect("a", &["s1:1", "s2:3"]),
                expect("b", &["s1:2", "s3:5"]),
                expect("a", &["s1:4", "s3:6"]),
            ]
        );
        assert_eq!(
            merged[0].sql,
            "INSERT INTO a (session_id, k, v) VALUES ($1, $2, $3), ($4, $5, $6)"
        );
    }

    #[test]
    fn one_row_is_the_statement_for_one_row() {
        let jobs = [job("s1", vec![(&A, 1)])];
        let merged = merge(&jobs);
        assert_eq!(merged[0].sql, A.one);
    }
}
