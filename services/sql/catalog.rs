//! The SQL catalog, stored in range 1 next to the other system data:
//!
//! | key | value |
//! |---|---|
//! | `/System/db/<name>` | [`DatabaseDescriptor`] |
//! | `/System/ns/<db>\0<table>` | [`TableDescriptor`] (lookup by name) |
//! | `/System/desc/<id>` | [`TableDescriptor`] (lookup by id, for range names) |
//! | `/System/idalloc/desc` | last database/table id handed out |
//!
//! Both copies of a table descriptor are written in one batch, so they never disagree. A new
//! table gets its own range: its span is split off at creation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::services::error::Error;
use crate::services::keys;
use crate::services::kv::{self, Kv, Op};
use crate::services::sql::error::{SERIALIZATION_FAILURE, SqlError};
use crate::services::sql::value::{self, SqlType, Value};
use crate::services::status::TableNames;

/// The database of a connection that names none.
pub const DEFAULT_DATABASE: &str = "defaultdb";
/// The only schema.
pub const PUBLIC_SCHEMA: &str = "public";
/// The descriptor ID allocator.
pub const DESCRIPTOR_ID_ALLOCATOR: &[u8] = b"\x04idalloc/desc";
const DATABASE_PREFIX: &[u8] = keys::CATALOG_PREFIXES[0];
const NAMESPACE_PREFIX: &[u8] = keys::CATALOG_PREFIXES[1];
const DESCRIPTOR_PREFIX: &[u8] = keys::CATALOG_PREFIXES[2];
/// The id of `defaultdb` (as in CockroachDB); user tables start after it.
const DEFAULT_DATABASE_ID: u64 = 100;
const FIRST_USER_ID: u64 = 104;

/// A database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseDescriptor {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
}

/// A column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: SqlType,
    /// Whether NULL is allowed (never for primary-key columns).
    pub nullable: bool,
}

/// A table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDescriptor {
    /// Its id; its rows live under `/Table/<id>/1/`.
    pub id: u64,
    /// Its database.
    pub database: String,
    /// Its schema (always `public`).
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order.
    pub primary_key: Vec<usize>,
}

impl TableDescriptor {
    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The name of the primary index (CockroachDB: `<table>_pkey`).
    pub fn primary_index_name(&self) -> String {
        format!("{}_pkey", self.name)
    }

    /// The key of the row whose primary-key values are `pk` (in key order).
    pub fn key_for_pk(&self, pk: &[Value]) -> Vec<u8> {
        let mut key = value::table_prefix(self.id);
        for v in pk {
            value::encode_key_value(&mut key, v);
        }
        key
    }

    /// The key of `row` (all columns).
    pub fn row_key(&self, row: &[Value]) -> Vec<u8> {
        let pk: Vec<Value> = self.primary_key.iter().map(|&i| row[i].clone()).collect();
        self.key_for_pk(&pk)
    }

    /// Encodes a row's value.
    pub fn encode_row(&self, row: &[Value]) -> Vec<u8> {
        serde_json::to_vec(row).unwrap_or_default()
    }

    /// Decodes a row's value.
    pub fn decode_row(&self, bytes: &[u8]) -> Result<Vec<Value>, SqlError> {
        let mut row: Vec<Value> = serde_json::from_slice(bytes)
            .map_err(|err| SqlError::new("XX001", format!("corrupt row in table {}: {err}", self.name)))?;
        row.resize(self.columns.len(), Value::Null);
        Ok(row)
    }

    /// The span of the primary index.
    pub fn index_span(&self) -> (Vec<u8>, Vec<u8>) {
        let start = value::table_prefix(self.id);
        let end = keys::prefix_end(&start);
        (start, end)
    }
}

fn database_key(name: &str) -> Vec<u8> {
    [DATABASE_PREFIX, name.as_bytes()].concat()
}

fn namespace_prefix(database: &str) -> Vec<u8> {
    [NAMESPACE_PREFIX, database.as_bytes(), b"\0"].concat()
}

fn namespace_key(database: &str, table: &str) -> Vec<u8> {
    [namespace_prefix(database).as_slice(), table.as_bytes()].concat()
}

fn descriptor_key(id: u64) -> Vec<u8> {
    [DESCRIPTOR_PREFIX, &id.to_be_bytes()].concat()
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, SqlError> {
    serde_json::from_slice(bytes).map_err(|err| SqlError::new("XX001", format!("corrupt catalog entry: {err}")))
}

/// The records `init` writes: `defaultdb` and the descriptor allocator.
pub fn bootstrap_ops() -> Vec<Op> {
    vec![
        Op::Put {
            key: database_key(DEFAULT_DATABASE),
            value: json(&DatabaseDescriptor { id: DEFAULT_DATABASE_ID, name: DEFAULT_DATABASE.into() }),
        },
        Op::Put { key: DESCRIPTOR_ID_ALLOCATOR.to_vec(), value: keys::encode_u64(FIRST_USER_ID - 1) },
    ]
}

/// Most table descriptors kept by name before the cache starts afresh.
const TABLE_CACHE_ENTRIES: usize = 10_000;

/// Catalog access through the KV layer, with the caches that keep statements from reading
/// range 1: table descriptors by name (valid while the catalog version this process applied is
/// unchanged) and range names by table id (ids are never reused). One per node, shared by its
/// SQL engine and its StatusService.
pub struct Catalog {
    kv: Arc<dyn Kv>,
    tables: Mutex<HashMap<(String, String), (u64, TableDescriptor)>>,
    names: Mutex<HashMap<u64, TableNames>>,
}

impl Catalog {
    /// The catalog as seen through `kv`.
    pub fn new(kv: Arc<dyn Kv>) -> Self {
        Self { kv, tables: Default::default(), names: Default::default() }
    }

    /// The KV handle the catalog reads through.
    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    async fn get(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, SqlError> {
        Ok(self.kv.batch(vec![Op::Get { key }]).await?.remove(0).value)
    }

    async fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, SqlError> {
        let op = Op::Scan { start: prefix.to_vec(), end: keys::prefix_end(prefix), limit: 0 };
        Ok(self.kv.batch(vec![op]).await?.remove(0).rows)
    }

    async fn allocate_id(&self) -> Result<u64, SqlError> {
        let op = Op::Increment { key: DESCRIPTOR_ID_ALLOCATOR.to_vec(), delta: 1 };
        Ok(self.kv.batch(vec![op]).await?.remove(0).new_value as u64)
    }

    /// A cached descriptor still valid at `version` (0: caching off).
    fn cached_table(&self, database: &str, table: &str, version: u64) -> Option<TableDescriptor> {
        let cache = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(&(database.to_string(), table.to_string()))
            .filter(|(cached_at, _)| *cached_at == version && version != 0)
            .map(|(_, table)| table.clone())
    }

    fn cache_table(&self, database: &str, table: &str, version: u64, descriptor: TableDescriptor) {
        let mut cache = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= TABLE_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert((database.to_string(), table.to_string()), (version, descriptor));
    }

    /// Forgets every cached descriptor (after this node's own DDL).
    fn clear_table_cache(&self) {
        self.tables.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The SQL names of the range starting at `start_key`: its table's, for table ranges;
    /// empty for system ranges and for tables that no longer exist.
    pub async fn range_names(&self, start_key: &[u8]) -> TableNames {
        let Some(table_id) = value::table_id_of_key(start_key) else { return TableNames::default() };
        if let Some(names) = self.names.lock().unwrap_or_else(|p| p.into_inner()).get(&table_id) {
            return names.clone();
        }
        // Status views name ranges from this node's applied copy: table ids are never reused,
        // and a hot-ranges answer must not wait for range 1's leader.
        match self.table_by_id_applied_first(table_id).await {
            Ok(Some(table)) => {
                let names = TableNames {
                    index: table.primary_index_name(),
                    database: table.database,
                    schema: table.schema,
                    table: table.name,
                };
                self.names.lock().unwrap_or_else(|p| p.into_inner()).insert(table_id, names.clone());
                names
            }
            _ => TableNames::default(),
        }
    }

    /// The database `name`, if it exists.
    pub async fn database(&self, name: &str) -> Result<Option<DatabaseDescriptor>, SqlError> {
        self.get(database_key(name)).await?.map(|bytes| parse(&bytes)).transpose()
    }

    /// Every database, by name.
    pub async fn databases(&self) -> Result<Vec<DatabaseDescriptor>, SqlError> {
        self.scan_prefix(DATABASE_PREFIX).await?.iter().map(|(_, v)| parse(v)).collect()
    }

    /// Creates database `name`; `Ok(false)` if it existed and `if_not_exists`.
    pub async fn create_database(&self, name: &str, if_not_exists: bool) -> Result<bool, SqlError> {
        let id = self.allocate_id().await?;
        let op = Op::ConditionalPut {
            key: database_key(name),
            value: json(&DatabaseDescriptor { id, name: name.to_string() }),
            expected: None,
        };
        let result = self.kv.batch(vec![op]).await;
        self.clear_table_cache();
        match result {
            Ok(_) => Ok(true),
            Err(Error::ConditionFailed { .. }) if if_not_exists => Ok(false),
            Err(Error::ConditionFailed { .. }) => {
                Err(SqlError::new("42P04", format!("database \"{name}\" already exists")))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The table `name` of `database`, if it exists. A found descriptor is served from the
    /// cache while the catalog version this node has applied is unchanged, so statements
    /// do not read range 1. Absence is never cached, and this node's own DDL clears the cache,
    /// so a node always sees its own catalog changes; a change made through another node is
    /// seen once this node applies it (milliseconds).
    pub async fn table(&self, database: &str, name: &str) -> Result<Option<TableDescriptor>, SqlError> {
        let version = self.kv.catalog_version();
        if let Some(cached) = self.cached_table(database, name, version) {
            return Ok(Some(cached));
        }
        let table: Option<TableDescriptor> =
            self.get(namespace_key(database, name)).await?.map(|bytes| parse(&bytes)).transpose()?;
        if let Some(table) = &table {
            self.cache_table(database, name, version, table.clone());
        }
        Ok(table)
    }

    /// The table with id `id`, if it exists.
    pub async fn table_by_id(&self, id: u64) -> Result<Option<TableDescriptor>, SqlError> {
        self.get(descriptor_key(id)).await?.map(|bytes| parse(&bytes)).transpose()
    }

    /// [`Catalog::table_by_id`] from the serving node's applied copy when it has the table
    /// ([`kv::get_applied_first`]).
    async fn table_by_id_applied_first(&self, id: u64) -> Result<Option<TableDescriptor>, SqlError> {
        kv::get_applied_first(self.kv.as_ref(), descriptor_key(id)).await?.map(|bytes| parse(&bytes)).transpose()
    }

    /// Every table of `database`, by name.
    pub async fn tables(&self, database: &str) -> Result<Vec<TableDescriptor>, SqlError> {
        self.scan_prefix(&namespace_prefix(database)).await?.iter().map(|(_, v)| parse(v)).collect()
    }

    /// Creates a table (its id is allocated here) and gives it its own range. `Ok(None)` if it
    /// existed and `if_not_exists`.
    pub async fn create_table(
        &self,
        mut table: TableDescriptor,
        if_not_exists: bool,
    ) -> Result<Option<TableDescriptor>, SqlError> {
        if self.database(&table.database).await?.is_none() {
            return Err(SqlError::new("3D000", format!("database \"{}\" does not exist", table.database)));
        }
        if if_not_exists && self.table(&table.database, &table.name).await?.is_some() {
            return Ok(None);
        }
        table.id = self.allocate_id().await?;
        let ops = vec![
            Op::ConditionalPut {
                key: namespace_key(&table.database, &table.name),
                value: json(&table),
                expected: None,
            },
            Op::Put { key: descriptor_key(table.id), value: json(&table) },
        ];
        let result = self.kv.batch(ops).await;
        self.clear_table_cache();
        match result {
            Ok(_) => {}
            Err(Error::ConditionFailed { .. }) if if_not_exists => return Ok(None),
            Err(Error::ConditionFailed { .. }) => {
                return Err(SqlError::new("42P07", format!("relation \"{}\" already exists", table.name)));
            }
            Err(err) => return Err(err.into()),
        }
        // Each table in its own ranges: split at both ends of its span.
        let (start, end) = value::table_span(table.id);
        self.kv.split(start).await?;
        self.kv.split(end).await?;
        Ok(Some(table))
    }

    /// Drops a table and all its rows in one batch; `Ok(false)` if it did not exist and
    /// `if_exists`.
    pub async fn drop_table(&self, database: &str, name: &str, if_exists: bool) -> Result<bool, SqlError> {
        let Some(table) = self.table(database, name).await? else {
            return if if_exists { Ok(false) } else { Err(SqlError::undefined_table(name)) };
        };
        // The catalog change first, with a record of the rows to delete; then the rows. Table
        // ids are never reused, so rows left behind for a moment are never seen again.
        let (start, end) = value::table_span(table.id);
        let ops = vec![
            Op::ConditionalPut {
                key: namespace_key(database, name),
                value: json(&table),
                expected: Some(json(&table)),
            },
            Op::Delete { key: namespace_key(database, name) },
            Op::Delete { key: descriptor_key(table.id) },
            Op::Put { key: keys::gc_key(table.id), value: keys::encode_span(&start, &end) },
        ];
        let result = self.kv.batch(ops).await;
        self.clear_table_cache();
        match result {
            Ok(_) => {
                if let Err(err) = kv::delete_pending_span(self.kv.as_ref(), table.id, start, end).await {
                    tracing::warn!(table = table.id, error = %err, "rows of a dropped table left for the maintenance pass");
                }
                Ok(true)
            }
            Err(Error::ConditionFailed { .. }) => {
                Err(SqlError::new(SERIALIZATION_FAILURE, "table changed concurrently; retry"))
            }
            Err(err) => Err(err.into()),
        }
    }
}
