//! Group commit for accepted sends.
//!
//! Every send without an idempotency key writes its `queued` row before the
//! API answers. Written one by one, each is a statement, a commit (a disk
//! sync on Postgres) and a pooled connection pinged when it goes back. The
//! accept writer takes the sends that arrived while it wrote the last
//! batch and writes them as one multi-row `INSERT`: one statement, one
//! commit, on the writer's own connection (`link.rs`). A lone send goes at
//! once; nothing waits on a timer. Rows are numbered in the order the sends
//! arrived, which is the order the send queue takes them in.
//!
//! A caller waits until its row is committed. When a batch fails as a
//! whole, each send is tried again alone, so one bad row (its tenant
//! deleted meanwhile, say) fails only its own request.

use std::collections::HashMap;

use super::link::{Asked, Batch, Batcher, Link, Source};
use super::messages::{OUTBOUND_COLUMNS, OutboundMessage};
use super::{Result, StoreError, WriteFence};
use crate::tenants::TenantId;

/// Values a row binds.
const WIDTH: usize = 7;
/// Rows one statement writes at most (below 1,000 parameters).
const MAX_BATCH: usize = 999 / WIDTH;

/// A send to write as a `queued` row.
pub(super) struct NewSend {
    pub tenant: TenantId,
    pub sender_id: String,
    pub message_id: String,
    pub chat_id: String,
    pub kind: String,
    pub text: String,
    pub now: i64,
}

/// The handle callers use (see [`Batcher`]).
pub(super) struct AcceptWriter(Batcher<Accepts>);

struct Accepts;

impl AcceptWriter {
    pub(super) fn start(source: Source, fence: std::sync::Arc<WriteFence>) -> Self {
        AcceptWriter(Batcher::start(Accepts, Link::new(source, fence)))
    }

    /// Writes `send` with whatever else is waiting; answers with its row
    /// once committed.
    pub(super) async fn accept(&self, send: NewSend) -> Result<OutboundMessage> {
        self.0
            .ask(send)
            .await
            .unwrap_or_else(|| Err(StoreError::Conflict("the accept writer has stopped".into())))
    }

    /// Ends the task and closes its connection; what is queued fails.
    pub(super) fn close(&self) {
        self.0.close();
    }
}

impl Batch for Accepts {
    type Ask = NewSend;
    type Answer = Result<OutboundMessage>;
    const MOST: usize = MAX_BATCH;

    fn weight(_: &NewSend) -> usize {
        1
    }

    /// Writes one batch and answers its callers.
    async fn commit(&mut self, link: &mut Link, batch: Vec<Asked<Self>>) {
        let (sends, answers): (Vec<NewSend>, Vec<_>) = batch.into_iter().unzip();
        if sends.len() > 1 {
            match insert(link, &sends).await {
                Ok(mut rows) => {
                    for (send, done) in sends.iter().zip(answers) {
                        let _ = done.send(row_of(&mut rows, send));
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, sends = sends.len(),
                        "a batch of accepted sends failed; trying each alone");
                }
            }
        }
        for (send, done) in sends.iter().zip(answers) {
            let row = insert(link, std::slice::from_ref(send))
                .await
                .and_then(|mut rows| row_of(&mut rows, send));
            let _ = done.send(row);
        }
    }
}

fn row_of(rows: &mut HashMap<String, OutboundMessage>, send: &NewSend) -> Result<OutboundMessage> {
    rows.remove(&send.message_id)
        .ok_or_else(|| StoreError::Conflict("an accepted send came back without its row".into()))
}

/// One `INSERT` of every send in `batch`; the rows by message id.
async fn insert(link: &mut Link, batch: &[NewSend]) -> Result<HashMap<String, OutboundMessage>> {
    let sql = insert_sql(batch.len());
    let mut conn = link.connection().await?;
    let query = batch.iter().fold(
        sqlx::query_as::<_, OutboundMessage>(&sql).persistent(batch.len() <= 4),
        |query, send| {
            query
                .bind(send.tenant.as_str())
                .bind(send.message_id.as_str())
                .bind(send.chat_id.as_str())
                .bind(send.sender_id.as_str())
                .bind(send.kind.as_str())
                .bind(send.text.as_str())
                .bind(send.now)
        },
    );
    let rows = query.fetch_all(conn.get()).await;
    drop(conn);
    link.check(&rows);
    Ok(rows?
        .into_iter()
        .map(|row| (row.message_id.clone(), row))
        .collect())
}

fn insert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let p = |n: usize| format!("${}", row * WIDTH + n);
            format!(
                "({}, 'out', {}, {}, {}, {}, {}, 'queued', NULL, {t}, {t}, {t})",
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6),
                t = p(7)
            )
        })
        .collect();
    format!(
        "INSERT INTO messages (tenant_id, direction, message_id, chat_id, sender_id, kind, text,
                               status, idempotency_key, timestamp, created_at, updated_at)
         VALUES {}
         RETURNING {OUTBOUND_COLUMNS}",
        values.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::insert_sql;

    #[test]
    fn each_row_binds_its_own_values() {
        let sql = insert_sql(2);
        assert!(sql.contains("($1, 'out', $2, $3, $4, $5, $6, 'queued', NULL, $7, $7, $7)"));
        assert!(sql.contains("($8, 'out', $9, $10, $11, $12, $13, 'queued', NULL, $14, $14, $14)"));
    }
}
