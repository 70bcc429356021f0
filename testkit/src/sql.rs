//! Raw SQL for tests that must look under the store or break it on purpose (a corrupt
//! record, a row's exact columns). Product code never does this: it goes through `Store`.

use sqlx::{AnyConnection, AssertSqlSafe, Column, Connection, Row, ValueRef};

/// One column's value, as a test compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
}

impl Cell {
    /// The text of a text column; panics naming the value otherwise.
    pub fn text(&self) -> &str {
        match self {
            Cell::Text(s) => s,
            other => panic!("not a text column: {other:?}"),
        }
    }

    /// The integer of an integer column; panics naming the value otherwise.
    pub fn int(&self) -> i64 {
        match self {
            Cell::Int(i) => *i,
            other => panic!("not an integer column: {other:?}"),
        }
    }

    /// The text of a text column, `None` for NULL.
    pub fn opt_text(&self) -> Option<&str> {
        match self {
            Cell::Null => None,
            other => Some(other.text()),
        }
    }
}

async fn connect(url: &str) -> AnyConnection {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Runs `sql` (literals inline, no parameters) and returns the rows it changed.
pub async fn execute(url: &str, sql: &str) -> u64 {
    let mut conn = connect(url).await;
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .rows_affected()
}

/// The rows `sql` selects, each as its columns in order.
pub async fn rows(url: &str, sql: &str) -> Vec<Vec<Cell>> {
    try_rows(url, sql).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `rows`, or why the server could not be reached or answer (a node a test stopped).
pub async fn try_rows(url: &str, sql: &str) -> Result<Vec<Vec<Cell>>, String> {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    let rows = sqlx::query(AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut conn)
        .await
        .map_err(|e| format!("{sql}: {e}"))?;
    Ok(rows
        .iter()
        .map(|row| {
            (0..row.columns().len())
                .map(|i| {
                    let raw = row.try_get_raw(i).expect("a column in range");
                    if raw.is_null() {
                        return Cell::Null;
                    }
                    // PostgreSQL's int4 decodes only as i32.
                    let int = row
                        .try_get::<i64, _>(i)
                        .or_else(|_| row.try_get::<i32, _>(i).map(i64::from));
                    match int {
                        Ok(n) => Cell::Int(n),
                        Err(_) => Cell::Text(row.try_get::<String, _>(i).unwrap_or_else(|e| {
                            panic!("{sql}: column {}: {e}", row.column(i).name())
                        })),
                    }
                })
                .collect()
        })
        .collect())
}

/// Another connection holding the write lock until `release`, as a long write of another
/// process would: on SQLite the database's (`BEGIN IMMEDIATE`), on PostgreSQL an `EXCLUSIVE`
/// lock on `table`. Readers pass on both; writers wait (SQLite for its busy timeout at most).
pub struct WriteLock {
    conn: AnyConnection,
}

impl WriteLock {
    pub async fn hold(url: &str, table: &str) -> WriteLock {
        let mut conn = connect(url).await;
        let statements = if url.starts_with("postgres") {
            vec![
                "BEGIN".to_owned(),
                format!("LOCK TABLE {table} IN EXCLUSIVE MODE"),
            ]
        } else {
            vec!["BEGIN IMMEDIATE".to_owned()]
        };
        for sql in statements {
            sqlx::query(AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        WriteLock { conn }
    }

    /// Ends the transaction (it wrote nothing) and lets the waiting writers in.
    pub async fn release(mut self) {
        sqlx::query("COMMIT")
            .execute(&mut self.conn)
            .await
            .unwrap_or_else(|e| panic!("COMMIT: {e}"));
        let _ = self.conn.close().await;
    }
}

/// Makes the database itself refuse every `UPDATE` of `table` whose rows match `when` (an SQL
/// condition over `OLD` and `NEW`, the same on both backends), until `allow_updates`: a real
/// error from the database at the moment a full disk or a lock held past the busy timeout would
/// give one, for the code above the store to meet.
pub async fn refuse_updates(url: &str, table: &str, when: &str) {
    let name = format!("refuse_{table}");
    if url.starts_with("postgres") {
        execute(
            url,
            "CREATE OR REPLACE FUNCTION oshirase_test_refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'the test refuses this write'; END $$",
        )
        .await;
        execute(
            url,
            &format!(
                "CREATE TRIGGER {name} BEFORE UPDATE ON {table} FOR EACH ROW WHEN ({when})
                 EXECUTE FUNCTION oshirase_test_refuse()"
            ),
        )
        .await;
    } else {
        execute(
            url,
            &format!(
                "CREATE TRIGGER {name} BEFORE UPDATE ON {table} FOR EACH ROW WHEN {when}
                 BEGIN SELECT RAISE(ABORT, 'the test refuses this write'); END"
            ),
        )
        .await;
    }
}

/// Ends `refuse_updates` on `table`.
pub async fn allow_updates(url: &str, table: &str) {
    let on = if url.starts_with("postgres") {
        format!(" ON {table}")
    } else {
        String::new()
    };
    execute(url, &format!("DROP TRIGGER refuse_{table}{on}")).await;
}
