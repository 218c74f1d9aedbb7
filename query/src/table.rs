//! The `readings` and `buoys` tables.
//!
//! `readings` is a [`TableProvider`] over one engine [`Snapshot`]: catalog file selection by
//! time, buoy and metric before any file is opened; a Parquet scan (row-group and page-index
//! pruning, projection) of the files that need no merging; and a merge of the files that do
//! (time overlap with another file or the buffer, pending tombstones) with the live buffer,
//! applying last-write-wins and tombstones. The caller's [`AccessPolicy`] narrows the catalog
//! selection and is re-checked row by row inside the scan, so no SQL shape can read around it.

use bluewave_engine::columns::{COLUMN_BUOY_ID, COLUMN_METRIC, COLUMN_QUALITY, COLUMN_TS, COLUMN_VALUE};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bluewave_engine::{BuoyInfo, Engine, Precedence, ReadFilter, SelectedFile, Snapshot};
use bytes::Bytes;
use datafusion::arrow::array::{Float64Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileMetrics, ParquetFileReaderFactory,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, col, lit};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::{ParquetError, Result as ParquetResult};
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::union::UnionExec;
use futures::future::BoxFuture;

use crate::merge::{MergeExec, MergeInput};
use crate::policy::{AccessPolicy, BuoyScope};
use crate::scan::{ReadingsScanExec, ScanSummary};

/// Name of the readings table in SQL.
pub const READINGS: &str = "readings";
/// Name of the buoy registry table in SQL.
pub const BUOYS: &str = "buoys";

/// Column indexes of `readings`.
pub(crate) const COL_BUOY: usize = 0;
pub(crate) const COL_METRIC: usize = 1;
pub(crate) const COL_TS: usize = 2;
pub(crate) const COL_VALUE: usize = 3;
pub(crate) const COL_QUALITY: usize = 4;

/// The time zone of `ts`.
pub(crate) const TS_TZ: &str = bluewave_engine::columns::TS_TIMEZONE;

/// `readings(buoy_id, metric, ts, value, quality)`: names as text, `ts` as UTC nanoseconds,
/// `value` always `Float64` whatever a file's value encoding.
pub fn readings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(COLUMN_BUOY_ID, DataType::Utf8, false),
        Field::new(COLUMN_METRIC, DataType::Utf8, false),
        Field::new(COLUMN_TS, DataType::Timestamp(TimeUnit::Nanosecond, Some(TS_TZ.into())), false),
        Field::new(COLUMN_VALUE, DataType::Float64, false),
        Field::new(COLUMN_QUALITY, DataType::UInt8, false),
    ]))
}

/// `buoys(id, name, latitude, longitude, status)`.
pub fn buoys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("latitude", DataType::Float64, true),
        Field::new("longitude", DataType::Float64, true),
        Field::new("status", DataType::Utf8, false),
    ]))
}

/// The `buoys` table for one caller: only the buoys its policy grants.
pub(crate) fn buoys_table(buoys: &[BuoyInfo], policy: &AccessPolicy) -> DfResult<MemTable> {
    let visible: Vec<&BuoyInfo> = buoys.iter().filter(|b| policy.buoys.allows(&b.id)).collect();
    let mut id = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut latitude = Float64Builder::new();
    let mut longitude = Float64Builder::new();
    let mut status = StringBuilder::new();
    for b in &visible {
        id.append_value(&*b.id);
        name.append_value(&b.name);
        latitude.append_option(b.latitude);
        longitude.append_option(b.longitude);
        status.append_value(&b.status);
    }
    let batch = RecordBatch::try_new(
        buoys_schema(),
        vec![
            Arc::new(id.finish()),
            Arc::new(name.finish()),
            Arc::new(latitude.finish()),
            Arc::new(longitude.finish()),
            Arc::new(status.finish()),
        ],
    )?;
    MemTable::try_new(buoys_schema(), vec![vec![batch]])
}

/// Scan settings shared by every query of a service.
#[derive(Clone, Debug)]
pub(crate) struct ScanOptions {
    /// Data dir, absolute (Parquet files are opened through the local object store).
    pub data_dir: PathBuf,
    /// Rows per batch.
    pub batch_rows: usize,
    /// File groups a Parquet scan is split into.
    pub target_partitions: usize,
}

/// `readings` as seen by one caller, for one query.
#[derive(Debug)]
pub(crate) struct ReadingsTable {
    engine: Arc<Engine>,
    policy: Arc<AccessPolicy>,
    options: ScanOptions,
    /// The query's snapshot, taken at its first scan: every scan of one query (self-joins,
    /// subqueries, the rounds of a newest-first aggregate) reads the same state.
    snapshot: OnceLock<Arc<Snapshot>>,
    /// Catalog files this scan leaves out: those an aggregate answered from their statistics
    /// (`crate::stats`). Empty for every table the caller's SQL names.
    excluded: Arc<std::collections::HashSet<u64>>,
    /// When set, the only catalog files this scan reads, and no buffered rows: the edge
    /// minutes of files whose rollups an aggregate took (`crate::rollups`). `None` for every
    /// table the caller's SQL names.
    only: Option<Arc<std::collections::HashSet<u64>>>,
}

impl ReadingsTable {
    pub(crate) fn new(engine: Arc<Engine>, policy: Arc<AccessPolicy>, options: ScanOptions) -> Self {
        Self { engine, policy, options, snapshot: OnceLock::new(), excluded: Arc::default(), only: None }
    }

    /// The same table over the same snapshot without the files `excluded`.
    pub(crate) fn excluding(&self, excluded: std::collections::HashSet<u64>) -> Self {
        let snapshot = OnceLock::new();
        let _ = snapshot.set(self.snapshot());
        Self {
            engine: self.engine.clone(),
            policy: self.policy.clone(),
            options: self.options.clone(),
            snapshot,
            excluded: Arc::new(excluded),
            only: None,
        }
    }

    /// The same table over the same snapshot reading only the files `only` and no buffered
    /// rows. Exact only for files no other file, chunk or tombstone touches (no merge).
    pub(crate) fn only_files(&self, only: std::collections::HashSet<u64>) -> Self {
        let snapshot = OnceLock::new();
        let _ = snapshot.set(self.snapshot());
        Self {
            engine: self.engine.clone(),
            policy: self.policy.clone(),
            options: self.options.clone(),
            snapshot,
            excluded: Arc::default(),
            only: Some(Arc::new(only)),
        }
    }

    /// The query's snapshot (taken now if no scan took it yet).
    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.get_or_init(|| Arc::new(self.engine.snapshot())).clone()
    }

    /// What `filters` (pushed to a scan of this table) and the policy allow, for catalog
    /// selection; `None` when nothing can match.
    pub(crate) fn read_filter(&self, filters: &[Expr]) -> DfResult<Option<ReadFilter>> {
        let mut narrowing = Narrowing::default();
        for f in filters {
            narrowing.add(&unqualify(f.clone())?);
        }
        Ok(narrowing.with_policy(&self.policy))
    }
}

/// A string literal of a filter, after DataFusion's coercion.
pub(crate) fn string_literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)), _) => Some(s.clone()),
        Expr::Literal(ScalarValue::Utf8View(Some(s)), _) => Some(s.clone()),
        Expr::Cast(c) => string_literal(&c.expr),
        _ => None,
    }
}

/// A timestamp literal of a filter, in ns (None when not a plain non-null timestamp).
pub(crate) fn timestamp_literal(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::TimestampNanosecond(Some(t), _) => Some(*t),
            ScalarValue::TimestampMicrosecond(Some(t), _) => t.checked_mul(1_000),
            ScalarValue::TimestampMillisecond(Some(t), _) => t.checked_mul(1_000_000),
            ScalarValue::TimestampSecond(Some(t), _) => t.checked_mul(1_000_000_000),
            _ => None,
        },
        _ => None,
    }
}

/// The column a filter or aggregate term names, when it is a bare column.
pub(crate) fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        _ => None,
    }
}

/// Deepest filter term [`Narrowing`] looks at; deeper terms are still applied row by row.
const NARROWING_DEPTH_MAX: usize = 64;

/// What the pushed filters say about buoy, metric and time, for catalog selection. Filters
/// that say something else are still applied row by row; this only narrows the file set.
#[derive(Debug, Default)]
struct Narrowing {
    start: Option<i64>,
    end: Option<i64>,
    buoys: Option<BTreeSet<String>>,
    metrics: Option<BTreeSet<String>>,
}

impl Narrowing {
    fn restrict(set: &mut Option<BTreeSet<String>>, values: BTreeSet<String>) {
        *set = Some(match set.take() {
            None => values,
            Some(old) => old.intersection(&values).cloned().collect(),
        });
    }

    fn start_at(&mut self, t: i64) {
        self.start = Some(self.start.map_or(t, |s| s.max(t)));
    }

    fn end_before(&mut self, t: i64) {
        self.end = Some(self.end.map_or(t, |e| e.min(t)));
    }

    /// Rows that match `self` or `other`: each side's restriction only where both have one.
    fn either(self, other: Self) -> Self {
        let union = |a: Option<BTreeSet<String>>, b: Option<BTreeSet<String>>| match (a, b) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
        Self {
            start: self.start.zip(other.start).map(|(a, b)| a.min(b)),
            end: self.end.zip(other.end).map(|(a, b)| a.max(b)),
            buoys: union(self.buoys, other.buoys),
            metrics: union(self.metrics, other.metrics),
        }
    }

    /// Adds what filter `e` says. Only ever narrows to a superset of the rows `e` can match.
    fn add(&mut self, e: &Expr) {
        self.add_at(e, 0);
    }

    fn add_at(&mut self, e: &Expr, depth: usize) {
        // A filter of thousands of nested terms (the SQL text may hold them) must not exhaust
        // the stack: past this depth the rest narrows nothing, which is always sound.
        if depth >= NARROWING_DEPTH_MAX {
            return;
        }
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                self.add_at(left, depth + 1);
                self.add_at(right, depth + 1);
            }
            // DataFusion turns a short `IN` list into `=` terms joined by `OR`.
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
                let (mut l, mut r) = (Self::default(), Self::default());
                l.add_at(left, depth + 1);
                r.add_at(right, depth + 1);
                let either = l.either(r);
                if let Some(t) = either.start {
                    self.start_at(t);
                }
                if let Some(t) = either.end {
                    self.end_before(t);
                }
                if let Some(set) = either.buoys {
                    Self::restrict(&mut self.buoys, set);
                }
                if let Some(set) = either.metrics {
                    Self::restrict(&mut self.metrics, set);
                }
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                // Normalise `literal op column` to `column op' literal`.
                let (column, op, value) = match (column_name(left), column_name(right)) {
                    (Some(c), None) => (c, *op, right.as_ref()),
                    (None, Some(c)) => match op.swap() {
                        Some(swapped) => (c, swapped, left.as_ref()),
                        None => return,
                    },
                    _ => return,
                };
                match (column, op) {
                    (COLUMN_BUOY_ID, Operator::Eq) => {
                        if let Some(s) = string_literal(value) {
                            Self::restrict(&mut self.buoys, BTreeSet::from([s]));
                        }
                    }
                    (COLUMN_METRIC, Operator::Eq) => {
                        if let Some(s) = string_literal(value) {
                            Self::restrict(&mut self.metrics, BTreeSet::from([s]));
                        }
                    }
                    (COLUMN_TS, op) => {
                        let Some(t) = timestamp_literal(value) else { return };
                        match op {
                            Operator::GtEq => self.start_at(t),
                            Operator::Gt => self.start_at(t.saturating_add(1)),
                            Operator::Lt => self.end_before(t),
                            Operator::LtEq => self.end_before(t.saturating_add(1)),
                            Operator::Eq => {
                                self.start_at(t);
                                self.end_before(t.saturating_add(1));
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
            Expr::InList(list) if !list.negated => {
                let Some(column) = column_name(&list.expr) else { return };
                let values: Option<BTreeSet<String>> = list.list.iter().map(string_literal).collect();
                match (column, values) {
                    (COLUMN_BUOY_ID, Some(v)) => Self::restrict(&mut self.buoys, v),
                    (COLUMN_METRIC, Some(v)) => Self::restrict(&mut self.metrics, v),
                    _ => {}
                }
            }
            Expr::Between(b) if !b.negated && column_name(&b.expr) == Some(COLUMN_TS) => {
                if let (Some(lo), Some(hi)) = (timestamp_literal(&b.low), timestamp_literal(&b.high)) {
                    self.start_at(lo);
                    self.end_before(hi.saturating_add(1));
                }
            }
            _ => {}
        }
    }

    /// Adds the policy; `None` when nothing can match.
    fn with_policy(mut self, policy: &AccessPolicy) -> Option<ReadFilter> {
        if let BuoyScope::Only(set) = &policy.buoys {
            Self::restrict(&mut self.buoys, set.clone());
        }
        if let Some(earliest) = policy.earliest_ts {
            self.start_at(earliest);
        }
        if self.buoys.as_ref().is_some_and(BTreeSet::is_empty)
            || self.metrics.as_ref().is_some_and(BTreeSet::is_empty)
            || matches!((self.start, self.end), (Some(s), Some(e)) if e <= s)
        {
            return None;
        }
        Some(ReadFilter {
            start: self.start,
            end: self.end,
            buoys: self.buoys.map(|s| s.into_iter().collect()),
            metrics: self.metrics.map(|s| s.into_iter().collect()),
        })
    }
}

/// The policy as a row predicate over `readings` (None when it restricts nothing).
pub(crate) fn policy_predicate(policy: &AccessPolicy) -> Option<Expr> {
    let mut terms = Vec::new();
    if let BuoyScope::Only(set) = &policy.buoys {
        terms.push(col(COLUMN_BUOY_ID).in_list(set.iter().map(|b| lit(b.as_str())).collect(), false));
    }
    if let Some(earliest) = policy.earliest_ts {
        terms.push(
            col(COLUMN_TS).gt_eq(lit(ScalarValue::TimestampNanosecond(Some(earliest), Some(TS_TZ.into())))),
        );
    }
    conjunction(terms)
}

/// Drops table qualifiers so pushed filters resolve against the scan's own schema.
fn unqualify(e: Expr) -> DfResult<Expr> {
    Ok(e.transform_up(|e| match e {
        Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))),
        other => Ok(Transformed::no(other)),
    })?
    .data)
}

/// A Parquet source over `readings` files: footers and page indexes from the service's shared
/// cache (a one-buoy query touches a dozen files, and parsing their metadata again each time was
/// most of it), local byte ranges read in place, `pruning` for row groups, pages and rows.
fn parquet_source(
    state: &dyn Session,
    schema: &SchemaRef,
    pruning: Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
) -> DfResult<ParquetSource> {
    let runtime = state.runtime_env();
    let store = runtime.object_store(ObjectStoreUrl::local_filesystem())?;
    let readers = IndexedReaderFactory(CachedParquetFileReaderFactory::new(
        store,
        runtime.cache_manager.get_file_metadata_cache(),
    ));
    let mut source = ParquetSource::new(schema.clone())
        .with_table_parquet_options(state.table_options().parquet.clone())
        .with_parquet_file_reader_factory(Arc::new(readers));
    if let Some(p) = pruning {
        source = source.with_predicate(p);
    }
    Ok(source)
}

/// What the merge's inputs may be pruned by: the key ranges of `filter` (buoys, metrics,
/// time; the policy is in it) and the merged buoys. Key columns only, so every version of a key
/// is kept or dropped together.
fn key_predicate(filter: &ReadFilter, merge_buoys: &BTreeSet<Arc<str>>) -> Option<Expr> {
    let mut terms = Vec::new();
    let ts = |t: i64| lit(ScalarValue::TimestampNanosecond(Some(t), Some(TS_TZ.into())));
    if let Some(start) = filter.start {
        terms.push(col(COLUMN_TS).gt_eq(ts(start)));
    }
    if let Some(end) = filter.end {
        terms.push(col(COLUMN_TS).lt(ts(end)));
    }
    if let Some(buoys) = &filter.buoys {
        terms.push(col(COLUMN_BUOY_ID).in_list(buoys.iter().map(|b| lit(b.as_str())).collect(), false));
    }
    if !merge_buoys.is_empty() {
        terms.push(col(COLUMN_BUOY_ID).in_list(merge_buoys.iter().map(|b| lit(&**b)).collect(), false));
    }
    if let Some(metrics) = &filter.metrics {
        terms.push(col(COLUMN_METRIC).in_list(metrics.iter().map(|m| lit(m.as_str())).collect(), false));
    }
    conjunction(terms)
}

/// The whole of one selected file as a scan piece.
fn whole_file(f: &SelectedFile, options: &ScanOptions) -> PartitionedFile {
    let local = LocalFile { path: options.data_dir.join(&f.meta.path), size: f.meta.bytes };
    PartitionedFile::new(local.path.to_string_lossy().into_owned(), f.meta.bytes).with_extension(local)
}

/// Spreads files over `groups` groups of about equal bytes (largest first). A file larger than
/// half a group's share (and [`FILE_SPLIT_BYTES_MIN`]) is split into byte ranges of about that
/// size (the Parquet scan reads the row groups whose middle falls in a range), so a partition
/// folded into a few large files still spreads evenly over the scan's partitions. `split` is
/// false for a scan of named buoys: it reads a row group or two of each file, and a range costs
/// a row-group pass of its own.
fn file_groups(files: &[&SelectedFile], options: &ScanOptions, groups: usize, split: bool) -> Vec<FileGroup> {
    let groups = groups.max(1);
    let total: u64 = files.iter().map(|f| f.meta.bytes).sum();
    let piece_max = (total.div_ceil(groups as u64) / 2).max(FILE_SPLIT_BYTES_MIN);
    let mut pieces: Vec<(u64, PartitionedFile)> = Vec::new();
    for f in files {
        let bytes = f.meta.bytes;
        let local = LocalFile { path: options.data_dir.join(&f.meta.path), size: bytes };
        let path = local.path.to_string_lossy().into_owned();
        let parts = if split { bytes.div_ceil(piece_max).clamp(1, 2 * groups as u64) } else { 1 };
        if parts == 1 {
            pieces.push((bytes, PartitionedFile::new(path, bytes).with_extension(local)));
            continue;
        }
        let step = bytes.div_ceil(parts);
        for i in 0..parts {
            let (start, end) = (i * step, ((i + 1) * step).min(bytes));
            let range = PartitionedFile::new(path.clone(), bytes)
                .with_extension(local.clone())
                .with_range(i64::try_from(start).unwrap_or(i64::MAX), i64::try_from(end).unwrap_or(i64::MAX));
            pieces.push((end - start, range));
        }
    }
    pieces.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
    let mut out: Vec<(u64, Vec<PartitionedFile>)> = (0..groups).map(|_| (0, Vec::new())).collect();
    for (bytes, piece) in pieces {
        if let Some(smallest) = out.iter_mut().min_by_key(|(total, _)| *total) {
            smallest.0 += bytes;
            smallest.1.push(piece);
        }
    }
    out.into_iter().filter(|(_, files)| !files.is_empty()).map(|(_, files)| FileGroup::new(files)).collect()
}

/// Readers whose metadata always carries the page index, so the shared metadata cache keeps
/// it. DataFusion's opener asks for the footer alone and loads the page index itself after
/// row-group pruning, parsing it from the file again on every query and never caching it; for
/// a one-buoy query over folded partitions that parse (about 1,800 pages per column of an
/// hour of the fleet) was a large share of the query. Asking without options lets the cached
/// reader fetch footer and page index together once and serve both from the cache after.
#[derive(Debug)]
struct IndexedReaderFactory(CachedParquetFileReaderFactory);

impl ParquetFileReaderFactory for IndexedReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        partitioned_file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn AsyncFileReader + Send>> {
        let local = partitioned_file.extension::<LocalFile>().cloned().map(|file| LocalReader {
            bytes_scanned: ParquetFileMetrics::new(
                partition_index,
                partitioned_file.object_meta.location.as_ref(),
                metrics,
            )
            .bytes_scanned,
            file,
            open: None,
        });
        let inner = self.0.create_reader(partition_index, partitioned_file, metadata_size_hint, metrics)?;
        Ok(Box::new(IndexedReader { inner, local }))
    }
}

/// The file on the local disk behind a [`PartitionedFile`] of the scan, and its size.
#[derive(Clone, Debug)]
struct LocalFile {
    path: PathBuf,
    size: u64,
}

/// See [`IndexedReaderFactory`]. Byte ranges of a [`LocalFile`] are read in place with
/// `pread` instead of through the object store, which hands every range to a blocking-pool
/// thread: a one-buoy query reads a few kilobytes from each of a few dozen column chunks,
/// from the page cache, and the thread hops cost more than the reads.
struct IndexedReader {
    inner: Box<dyn AsyncFileReader + Send>,
    local: Option<LocalReader>,
}

/// Reads byte ranges of one [`LocalFile`], opened on first use.
struct LocalReader {
    file: LocalFile,
    open: Option<std::fs::File>,
    bytes_scanned: datafusion::physical_plan::metrics::Count,
}

impl LocalReader {
    fn read(&mut self, range: std::ops::Range<u64>) -> ParquetResult<Bytes> {
        use std::os::unix::fs::FileExt;
        let LocalFile { path, size } = &self.file;
        if range.start > range.end || range.end > *size {
            return Err(ParquetError::General(format!(
                "range {range:?} outside {} ({size} bytes)",
                path.display()
            )));
        }
        let open = match &mut self.open {
            Some(open) => open,
            None => {
                self.open.insert(std::fs::File::open(path).map_err(|e| ParquetError::External(Box::new(e)))?)
            }
        };
        // In bounds of the file's catalog size, checked above.
        let mut buffer = vec![0u8; (range.end - range.start) as usize];
        open.read_exact_at(&mut buffer, range.start).map_err(|e| ParquetError::External(Box::new(e)))?;
        self.bytes_scanned.add(buffer.len());
        Ok(Bytes::from(buffer))
    }
}

impl AsyncFileReader for IndexedReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        match &mut self.local {
            Some(local) => Box::pin(futures::future::ready(local.read(range))),
            None => self.inner.get_bytes(range),
        }
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        match &mut self.local {
            Some(local) => {
                Box::pin(futures::future::ready(ranges.into_iter().map(|r| local.read(r)).collect()))
            }
            None => self.inner.get_byte_ranges(ranges),
        }
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        // The options only carry the page index policy (Skip) and decryption, which BlueWave
        // files never use.
        self.inner.get_metadata(None)
    }
}

/// Files are split across scan partitions only above this size: a range costs a row-group
/// pass of its own (its footer comes from the metadata cache), more than a small file's scan.
const FILE_SPLIT_BYTES_MIN: u64 = 2 << 20;

#[async_trait]
impl TableProvider for ReadingsTable {
    fn schema(&self) -> SchemaRef {
        readings_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Every deterministic filter is applied exactly inside the scan (after catalog and
        // Parquet pruning), so DataFusion need not re-check it and may push limits down.
        Ok(filters
            .iter()
            .map(|f| {
                if f.is_volatile() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Exact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = readings_schema();
        let projection: Vec<usize> =
            projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
        let output_schema = Arc::new(schema.project(&projection)?);
        let snapshot = self.snapshot();

        let filters: Vec<Expr> = filters.iter().cloned().map(unqualify).collect::<DfResult<_>>()?;
        let policy = &self.policy;
        let Some(read_filter) = self.read_filter(&filters)? else {
            let summary = ScanSummary::nothing_visible(policy);
            return Ok(Arc::new(ReadingsScanExec::new(
                Arc::new(EmptyExec::new(output_schema)),
                snapshot,
                summary,
            )));
        };

        // Catalog selection, and what the policy alone would select (for EXPLAIN: the caller
        // learns how much its filters pruned, never how many files lie outside its policy).
        let mut selected = snapshot.select_files(&read_filter);
        if !self.excluded.is_empty() {
            selected.retain(|f| !self.excluded.contains(&f.meta.id));
        }
        if let Some(only) = &self.only {
            selected.retain(|f| only.contains(&f.meta.id));
        }
        let policy_only = Narrowing::default().with_policy(policy).map_or(0, |f| snapshot.count_files(&f));
        // Buoys whose rows need the last-write-wins merge somewhere (overlap per buoy, or a
        // tombstone): their rows are merged from every file holding them and left out of the
        // plain scan; every other row is read by the Parquet scan as it is.
        let merge_buoys: BTreeSet<Arc<str>> =
            selected.iter().flat_map(|f| f.merge_buoys.iter().cloned()).collect();
        let holds_merge_buoy = |f: &SelectedFile| merge_buoys.iter().any(|b| f.meta.has_buoy(b));
        let plain: Vec<&SelectedFile> =
            selected.iter().filter(|f| f.meta.buoys.iter().any(|b| !merge_buoys.contains(b))).collect();
        let merged: Vec<&SelectedFile> = selected.iter().filter(|f| holds_merge_buoy(f)).collect();

        let mut predicates = filters.clone();
        predicates.extend(policy_predicate(policy));
        // Columns the scan must produce: the projection, the filters' and the policy's, and
        // `buoy_id` when some buoys are merged (the plain scan leaves them out by it). Nothing
        // more: decoding a column nobody reads is most of a wide aggregate's cost.
        let mut needed: BTreeSet<usize> = projection.iter().copied().collect();
        if !merge_buoys.is_empty() {
            needed.insert(COL_BUOY);
        }
        for p in &predicates {
            for c in p.column_refs() {
                needed.insert(schema.index_of(&c.name)?);
            }
        }
        if needed.is_empty() {
            // `count(*)` projects nothing; a scan still needs one column to count rows by.
            needed.insert(COL_QUALITY);
        }
        let scan_columns: Vec<usize> = needed.into_iter().collect();
        let scan_schema = Arc::new(schema.project(&scan_columns)?);
        let predicate = conjunction(predicates);

        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !plain.is_empty() {
            let full = DFSchema::try_from(schema.as_ref().clone())?;
            // Used for row-group and page-index pruning (and row filtering); rows are filtered
            // again below.
            let pruning =
                predicate.as_ref().map(|p| state.create_physical_expr(p.clone(), &full)).transpose()?;
            let source = parquet_source(state, &schema, pruning)?;
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), Arc::new(source))
                .with_file_groups(file_groups(
                    &plain,
                    &self.options,
                    self.options.target_partitions,
                    read_filter.buoys.is_none(),
                ))
                .with_projection_indices(Some(scan_columns.clone()))?
                .with_batch_size(Some(self.options.batch_rows))
                .build();
            let mut scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
            if !merge_buoys.is_empty() {
                let list = merge_buoys.iter().map(|b| lit(&**b)).collect();
                let excluded = col(COLUMN_BUOY_ID).in_list(list, true);
                let scan_df_schema = DFSchema::try_from(scan_schema.as_ref().clone())?;
                scan = Arc::new(
                    FilterExecBuilder::new(state.create_physical_expr(excluded, &scan_df_schema)?, scan)
                        .build()?,
                );
            }
            inputs.push(scan);
        }
        // Chunks that may hold a wanted row: in the time window and holding a wanted buoy.
        let wanted_buoys = read_filter.buoy_set();
        let buffered = snapshot.chunks.iter().filter(|c| {
            self.only.is_none()
                && read_filter.start.is_none_or(|s| c.ts_max >= s)
                && read_filter.end.is_none_or(|e| c.ts_min < e)
                && wanted_buoys.as_ref().is_none_or(|want| c.buoy_names.iter().any(|b| want.contains(&**b)))
        });
        let chunks: Vec<_> = buffered.cloned().collect();
        let summary = ScanSummary {
            files_selected: selected.len(),
            files_pruned: policy_only.saturating_sub(selected.len()),
            files_merged: merged.len(),
            buoys_merged: merge_buoys.len(),
            buffer_chunks: chunks.len(),
            policy: ScanSummary::describe_policy(policy),
        };
        if !merged.is_empty() || !chunks.is_empty() {
            // Each overlapping file is read on its own, in its (key) order, pruned by the key
            // columns alone (see `crate::merge`), and merged as it streams.
            let merge_columns = crate::merge::input_columns(&scan_columns);
            let key_filter = key_predicate(&read_filter, &merge_buoys);
            let full = DFSchema::try_from(schema.as_ref().clone())?;
            let pruning = key_filter.map(|p| state.create_physical_expr(p, &full)).transpose()?;
            let source = Arc::new(parquet_source(state, &schema, pruning)?);
            let input_batch_rows = self.options.batch_rows.min(crate::merge::MERGE_INPUT_BATCH_ROWS_MAX);
            let mut merge_inputs = Vec::with_capacity(merged.len());
            for f in &merged {
                let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source.clone())
                    .with_file_groups(vec![FileGroup::new(vec![whole_file(f, &self.options)])])
                    .with_projection_indices(Some(merge_columns.clone()))?
                    .with_batch_size(Some(input_batch_rows))
                    .build();
                merge_inputs.push(MergeInput {
                    plan: DataSourceExec::from_data_source(config),
                    precedence: Precedence::file(f.meta.generation),
                    tombstones: f.tombstones.clone(),
                });
            }
            inputs.push(Arc::new(MergeExec::new(
                merge_inputs,
                merge_buoys.into_iter().collect(),
                chunks,
                snapshot.view.tombstones.clone(),
                read_filter,
                scan_schema.clone(),
                scan_columns.clone(),
                self.options.batch_rows,
            )));
        }
        let mut plan: Arc<dyn ExecutionPlan> = match inputs.len() {
            0 => Arc::new(EmptyExec::new(scan_schema.clone())),
            _ => UnionExec::try_new(inputs)?,
        };
        // Row by row: the policy and every pushed filter, then the caller's projection.
        let output_indices: Vec<usize> =
            projection.iter().map(|i| scan_columns.iter().position(|c| c == i).unwrap_or_default()).collect();
        let scan_df_schema = DFSchema::try_from(scan_schema.as_ref().clone())?;
        let row_predicate = match predicate {
            Some(p) => state.create_physical_expr(p, &scan_df_schema)?,
            None => state.create_physical_expr(lit(true), &scan_df_schema)?,
        };
        plan = Arc::new(
            FilterExecBuilder::new(row_predicate, plan).apply_projection(Some(output_indices))?.build()?,
        );
        if let Some(fetch) = limit {
            plan = Arc::new(LocalLimitExec::new(plan, fetch));
        }
        Ok(Arc::new(ReadingsScanExec::new(plan, snapshot, summary)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluewave_engine::FileMeta;

    fn selected(id: u64, bytes: u64) -> SelectedFile {
        SelectedFile {
            meta: Arc::new(FileMeta {
                id,
                partition_start: 0,
                partition_end: 1,
                path: format!("f{id}.parquet"),
                rows: 1,
                bytes,
                ts_min: 0,
                ts_max: 0,
                generation: 1,
                seq_min: 0,
                seq_max: 0,
                buoys: Vec::new(),
                metrics: Vec::new(),
                applied_tombstones: Vec::new(),
                buoy_ranges: Vec::new(),
                metric_stats: Vec::new(),
                series_stats: Vec::new(),
                rollup: None,
            }),
            overlaps: false,
            merge_buoys: Vec::new(),
            tombstones: Vec::new(),
        }
    }

    /// `(file, start, end)` of the pieces of one group.
    type Pieces = Vec<(String, i64, i64)>;

    /// The pieces of every group, and the groups' byte totals.
    fn layout(groups: &[FileGroup]) -> (Vec<Pieces>, Vec<i64>) {
        let pieces: Vec<Pieces> = groups
            .iter()
            .map(|g| {
                g.files()
                    .iter()
                    .map(|f| {
                        let (start, end) =
                            f.range.as_ref().map_or((0, f.object_meta.size as i64), |r| (r.start, r.end));
                        let local = f.extension::<LocalFile>().expect("every piece names its local file");
                        assert_eq!(local.size, f.object_meta.size);
                        (local.path.file_name().unwrap().to_string_lossy().into_owned(), start, end)
                    })
                    .collect()
            })
            .collect();
        let totals = pieces.iter().map(|g| g.iter().map(|(_, s, e)| e - s).sum()).collect();
        (pieces, totals)
    }

    #[test]
    fn large_files_are_split_into_ranges_that_cover_them_and_balance_the_groups() {
        const MIB: u64 = 1 << 20;
        let files = [selected(1, 12 * MIB), selected(2, 3 * MIB), selected(3, MIB)];
        let refs: Vec<&SelectedFile> = files.iter().collect();
        let options =
            ScanOptions { data_dir: PathBuf::from("/data"), batch_rows: 8_192, target_partitions: 2 };
        let (pieces, totals) = layout(&file_groups(&refs, &options, 2, true));
        // Half a group's share is 4 MiB: the 12 MiB file becomes three 4 MiB ranges.
        let mut ranges: Vec<(i64, i64)> =
            pieces.iter().flatten().filter(|(f, _, _)| f == "f1.parquet").map(|(_, s, e)| (*s, *e)).collect();
        ranges.sort_unstable();
        let m = MIB as i64;
        assert_eq!(ranges, vec![(0, 4 * m), (4 * m, 8 * m), (8 * m, 12 * m)]);
        assert_eq!(
            pieces.iter().flatten().filter(|(f, _, _)| f != "f1.parquet").count(),
            2,
            "small files whole"
        );
        assert_eq!(totals.iter().sum::<i64>(), 16 * m);
        assert_eq!(totals.iter().max(), Some(&(8 * m)), "8 MiB a group");
        // A scan of named buoys reads whole files.
        let (pieces, _) = layout(&file_groups(&refs, &options, 2, false));
        assert!(pieces.iter().flatten().all(|(f, s, e)| *s == 0
            && *e
                == files.iter().find(|x| format!("f{}.parquet", x.meta.id) == *f).unwrap().meta.bytes
                    as i64));
        assert_eq!(pieces.iter().flatten().count(), 3);
    }
}
