//! `wago migrate-db --from DSN --to DSN`: every table that holds data,
//! WhatsApp keys included, copied from one database to another (SQLite to
//! Postgres, or back), then counted on both sides.
//!
//! No server may run on either database meanwhile: SQLite files are
//! locked as `wago serve` locks them; for Postgres that is the operator's
//! to ensure (stop the nodes first).

use std::io::Write;

use anyhow::{Context, bail};

use crate::store::Store;
use crate::store::copy::{SKIPPED_TABLES, copied_tables};
use crate::types::Dsn;

/// What was copied, table by table.
#[derive(Debug, Default)]
pub struct Report {
    pub tables: Vec<(&'static str, u64)>,
}

impl Report {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// Copies `from` into `to`. A target that holds data is refused unless
/// `replace`, which deletes it first. Progress goes to `out`.
pub async fn migrate_db(
    from: &Dsn,
    to: &Dsn,
    replace: bool,
    out: &mut impl Write,
) -> anyhow::Result<Report> {
    if from == to {
        bail!("--from and --to name the same database");
    }
    if let Dsn::Sqlite(path) = from
        && !path.exists()
    {
        bail!("--from: there is no SQLite database at {}", path.display());
    }
    let _locks = [from, to]
        .into_iter()
        .filter_map(|dsn| match dsn {
            Dsn::Sqlite(path) if path.as_os_str() != ":memory:" => Some(path),
            _ => None,
        })
        .map(|path| crate::store::ProcessLock::acquire(path))
        .collect::<Result<Vec<_>, _>>()?;
    let source = Store::connect(from).await.context("opening --from")?;
    let target = Store::connect(to).await.context("opening --to")?;
    // Both at the same schema, so that their columns match.
    source.migrate().await.context("migrating --from")?;
    target.migrate().await.context("migrating --to")?;

    let copied = copied_tables();
    let mut tables = source.table_names().await?;
    tables.retain(|t| !SKIPPED_TABLES.contains(&t.as_str()));
    if let Some(unknown) = tables.iter().find(|t| !copied.contains(&t.as_str())) {
        bail!("the source has a table {unknown} that this version does not know how to copy");
    }

    let mut held = Vec::new();
    for table in &copied {
        let n = target.count_rows(table).await?;
        if n > 0 {
            held.push(format!("{table}: {n}"));
        }
    }
    if !held.is_empty() {
        if !replace {
            bail!(
                "the target database is not empty ({}); pass --replace to delete what it holds first",
                held.join(", ")
            );
        }
        writeln!(out, "deleting what the target holds ({})", held.join(", "))?;
        let mut all = copied.clone();
        all.extend(SKIPPED_TABLES);
        target.clear_tables(&all).await?;
    }

    writeln!(out, "copying {from} to {to}")?;
    let mut report = Report::default();
    for table in copied {
        let total = source.count_rows(table).await?;
        let mut shown = 0;
        let copied = target
            .copy_table_from(&source, table, |n| {
                if n - shown >= 50_000 {
                    shown = n;
                    let _ = writeln!(out, "  {table}: {n} of {total} rows…");
                }
            })
            .await
            .with_context(|| format!("copying {table}"))?;
        writeln!(out, "  {table}: {copied} rows")?;
        report.tables.push((table, copied));
    }
    target.reset_identities().await?;

    // Counted again on both sides.
    for (table, copied) in &report.tables {
        let (there, here) = (
            source.count_rows(table).await?,
            target.count_rows(table).await?,
        );
        if there != here || here != *copied as i64 {
            bail!(
                "{table}: the source has {there} rows and the target {here} after copying {copied}"
            );
        }
    }
    writeln!(
        out,
        "copied {} rows in {} tables; both sides count the same",
        report.rows(),
        report.tables.len()
    )?;
    source.close().await;
    target.close().await;
    Ok(report)
}
