//! Where store tests run: each against a real SQLite file and a real
//! PostgreSQL server (a throwaway cluster; skipped loudly where none can be
//! started, a failure when `MANDATE_REQUIRE_POSTGRES=1`).

// Each test binary uses only part of this.
#![allow(dead_code)]

use mandate_audit::{EventKind, NewEvent};
use mandate_core::{Owner, OwnerName};
use mandate_store::{PostgresStore, SqliteStore, Store};
use std::path::PathBuf;
use std::sync::Arc;

pub fn ev(kind: EventKind) -> NewEvent {
    NewEvent::new(kind, "test")
}

/// A store at `place` with owner `platform`.
pub async fn seeded(place: &Place) -> Arc<dyn Store> {
    let s = place.open().await;
    s.create_owner(
        Owner {
            name: OwnerName::parse("platform").unwrap(),
            description: String::new(),
            created_at: 0,
            kind: mandate_core::OwnerKind::Team,
        },
        ev(EventKind::OwnerCreated),
    )
    .await
    .unwrap();
    s
}

/// Where a test's store lives; `open` again to reopen the same data.
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Place {
    pub fn sqlite() -> Place {
        Place::Sqlite(tempfile::tempdir().unwrap())
    }

    pub fn postgres(test: &str) -> Option<Place> {
        mandate_testkit::postgres::database(test).map(Place::Postgres)
    }

    /// The database file of a SQLite place.
    pub fn sqlite_file(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("mandate.db")
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        match self {
            Place::Sqlite(dir) => Arc::new(SqliteStore::open(&Place::sqlite_file(dir)).unwrap()),
            Place::Postgres(url) => Arc::new(
                PostgresStore::open(url.clone().into(), Default::default())
                    .await
                    .unwrap(),
            ),
        }
    }
}

/// `on_each_backend!(a, b)` makes `sqlite::a`, `postgres::a`, … from
/// `async fn a(place: Place)`.
#[macro_export]
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Place::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(place) = $crate::common::Place::postgres(stringify!($name)) {
                        super::$name(place).await
                    }
                }
            )*
        }
    };
}
