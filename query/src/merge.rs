//! The last-write-wins merge of the `readings` scan, streamed.
//!
//! Rows of one key `(buoy, metric, ts)` may lie in several selected files (late data, rewrites,
//! the uncompacted generations a crash or heavy ingest leaves) and in the live buffer. Each
//! file is sorted by that key, so [`MergeExec`] reads every overlapping file through its own
//! Parquet scan (row-group, page and row pruning by the key columns only), holds one batch of
//! each at a time, and k-way merges them with the buffered rows (already in memory, sorted
//! here). Of the rows of one key the one of highest [`Precedence`] wins, by
//! [`Precedence::replaces`] visited in the reference reader's order (files in selection order,
//! then the buffer). Memory is one batch per input plus one output batch, whatever the rows.
//!
//! Only key columns may prune the inputs: a filter on `value` applied before the merge could
//! drop a newer version of a key and let an older one win. Filters on other columns are
//! applied above the merge (`FilterExec` of the scan).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use bluewave_engine::{Chunk, Precedence, ReadFilter, Tombstone};
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, StringBuilder,
    TimestampNanosecondArray, UInt8Array,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use crate::table::{COL_BUOY, COL_METRIC, COL_QUALITY, COL_TS, COL_VALUE, TS_TZ};

/// Most rows a merge input decodes at once (a Parquet batch of one file). With `k` inputs the
/// merge holds about `k` such batches: 2,048 rows of the five columns are about 100 KB.
pub(crate) const MERGE_INPUT_BATCH_ROWS_MAX: usize = 2_048;

/// Approximate bytes one buffered candidate row holds before it is turned into a batch.
const BUFFERED_ROW_BYTES: usize = 64;

/// One file of the merge: its Parquet scan (one partition, rows in file order) and how its
/// rows rank.
#[derive(Debug, Clone)]
pub(crate) struct MergeInput {
    /// A scan of the one file producing [`MergeExec::input_columns`], pruned by key columns only.
    pub plan: Arc<dyn ExecutionPlan>,
    /// The file's rows' last-write-wins precedence (its flush generation).
    pub precedence: Precedence,
    /// Tombstones that hide rows of this file.
    pub tombstones: Vec<Arc<Tombstone>>,
}

/// The merge of the files that need it with the buffer: one partition, rows sorted by key.
#[derive(Debug)]
pub(crate) struct MergeExec {
    /// The overlapping files, in catalog selection order.
    inputs: Vec<MergeInput>,
    /// Sorted: the buoys whose file rows are merged (the plain scan reads the others).
    file_buoys: Arc<[Arc<str>]>,
    /// Buffered chunks that may hold wanted rows.
    chunks: Vec<Arc<Chunk>>,
    /// Tombstones in force (they hide buffered rows of lower sequence).
    tombstones: Vec<Arc<Tombstone>>,
    /// Rows wanted (time, buoys, metrics), with the policy.
    filter: ReadFilter,
    /// Output schema: `columns` of `readings`.
    schema: SchemaRef,
    /// Output columns (indexes of `readings`, ascending).
    columns: Vec<usize>,
    /// Columns the inputs produce: `columns` and the key columns (ascending).
    input_columns: Vec<usize>,
    /// Output rows per batch.
    batch_rows: usize,
    properties: Arc<PlanProperties>,
}

/// The columns the merge's inputs must produce for output `columns`: those and the key.
pub(crate) fn input_columns(columns: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = columns.iter().copied().chain([COL_BUOY, COL_METRIC, COL_TS]).collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl MergeExec {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inputs: Vec<MergeInput>,
        file_buoys: Vec<Arc<str>>,
        chunks: Vec<Arc<Chunk>>,
        tombstones: Vec<Arc<Tombstone>>,
        filter: ReadFilter,
        schema: SchemaRef,
        columns: Vec<usize>,
        batch_rows: usize,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        let input_columns = input_columns(&columns);
        Self {
            inputs,
            file_buoys: file_buoys.into(),
            chunks,
            tombstones,
            filter,
            schema,
            columns,
            input_columns,
            batch_rows: batch_rows.max(1),
            properties,
        }
    }
}

impl DisplayAs for MergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MergeExec: files={}, file_buoys={}, buffer_chunks={}",
            self.inputs.len(),
            self.file_buoys.len(),
            self.chunks.len()
        )
    }
}

impl ExecutionPlan for MergeExec {
    crate::scan::leaf_plan_methods!("MergeExec");

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("MergeExec has one partition, not {partition}")));
        }
        let reservation = MemoryConsumer::new("ReadingsMerge").register(context.memory_pool());
        let layout = Layout::new(&self.input_columns)?;
        let mut cursors = Vec::with_capacity(self.inputs.len() + 1);
        for input in &self.inputs {
            cursors.push(Cursor {
                feed: Feed::Stream(input.plan.execute(0, context.clone())?),
                tombstones: input.tombstones.clone(),
                precedence: input.precedence,
                batch: None,
                row: 0,
            });
        }
        let buffered = BufferedRows {
            chunks: self.chunks.clone(),
            tombstones: self.tombstones.clone(),
            filter: self.filter.clone(),
            batch_rows: self.batch_rows.min(MERGE_INPUT_BATCH_ROWS_MAX),
            layout: layout.clone(),
            input_schema: Arc::new(crate::table::readings_schema().project(&self.input_columns)?),
        };
        let merger = Merger {
            cursors,
            heap: Vec::new(),
            started: false,
            file_buoys: self.file_buoys.clone(),
            filter: self.filter.clone(),
            layout,
            columns: self.columns.clone(),
            schema: self.schema.clone(),
            batch_rows: self.batch_rows,
            out: Output::default(),
            reservation,
            held_bytes: Vec::new(),
            buffered: Some(buffered),
        };
        let batches = futures::stream::try_unfold(merger, |mut merger| async move {
            Ok(merger.next_batch().await?.map(|batch| (batch, merger)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches)))
    }
}

/// Positions of the columns in an input batch (`MergeExec::input_columns` order).
#[derive(Clone, Debug)]
struct Layout {
    buoy: usize,
    metric: usize,
    ts: usize,
    value: Option<usize>,
    quality: Option<usize>,
}

impl Layout {
    fn new(input_columns: &[usize]) -> DfResult<Self> {
        let at = |c: usize| input_columns.iter().position(|&x| x == c);
        let key = |c: usize| {
            at(c).ok_or_else(|| DataFusionError::Internal("merge input lacks a key column".into()))
        };
        Ok(Self {
            buoy: key(COL_BUOY)?,
            metric: key(COL_METRIC)?,
            ts: key(COL_TS)?,
            value: at(COL_VALUE),
            quality: at(COL_QUALITY),
        })
    }
}

/// One input batch, its columns typed.
struct Loaded {
    buoy: StringArray,
    metric: StringArray,
    ts: TimestampNanosecondArray,
    value: Option<Float64Array>,
    quality: Option<UInt8Array>,
    /// Per-row precedence (buffered rows); file rows all share their file's.
    precedence: Option<Vec<Precedence>>,
    /// Bytes of the arrays, accounted in the merge's reservation while held.
    bytes: usize,
}

impl Loaded {
    fn new(batch: &RecordBatch, layout: &Layout, precedence: Option<Vec<Precedence>>) -> DfResult<Self> {
        let text = |i: usize| -> DfResult<StringArray> {
            let column = batch.column(i);
            let column = if column.data_type() == &DataType::Utf8 {
                column.clone()
            } else {
                cast(column, &DataType::Utf8)?
            };
            column
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| DataFusionError::Internal("merge input name column is not text".into()))
        };
        let typed = |i: usize| -> DfResult<ArrayRef> { Ok(batch.column(i).clone()) };
        let ts = typed(layout.ts)?
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .cloned()
            .ok_or_else(|| DataFusionError::Internal("merge input ts is not ns timestamps".into()))?;
        let value = match layout.value {
            Some(i) => Some(
                typed(i)?
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .cloned()
                    .ok_or_else(|| DataFusionError::Internal("merge input value is not f64".into()))?,
            ),
            None => None,
        };
        let quality = match layout.quality {
            Some(i) => Some(
                typed(i)?
                    .as_any()
                    .downcast_ref::<UInt8Array>()
                    .cloned()
                    .ok_or_else(|| DataFusionError::Internal("merge input quality is not u8".into()))?,
            ),
            None => None,
        };
        let (buoy, metric) = (text(layout.buoy)?, text(layout.metric)?);
        let bytes =
            batch.get_array_memory_size() + buoy.get_array_memory_size() + metric.get_array_memory_size();
        Ok(Self { buoy, metric, ts, value, quality, precedence, bytes })
    }

    fn len(&self) -> usize {
        self.ts.len()
    }
}

/// Where an input's batches come from.
enum Feed {
    /// A file's Parquet scan.
    Stream(SendableRecordBatchStream),
    /// Buffered rows, sorted and deduplicated, already in batches, and the bytes of those
    /// still queued.
    Batches(VecDeque<Loaded>, usize),
    /// Nothing more.
    Done,
}

/// What a feed gave.
enum Next {
    Batch(Option<DfResult<RecordBatch>>),
    Loaded(Option<Box<Loaded>>),
}

/// One sorted input of the merge and its position.
struct Cursor {
    feed: Feed,
    /// Tombstones hiding rows of this input (files only; buffered rows are checked when
    /// gathered).
    tombstones: Vec<Arc<Tombstone>>,
    /// Precedence of every row of a file input.
    precedence: Precedence,
    /// The current batch; `None` before the first and after the last.
    batch: Option<Loaded>,
    /// Current row of `batch`.
    row: usize,
}

impl Cursor {
    /// The current row's key; only called while `batch` holds a current row.
    fn key(&self) -> (&str, &str, i64) {
        match &self.batch {
            Some(b) => (b.buoy.value(self.row), b.metric.value(self.row), b.ts.value(self.row)),
            None => ("", "", i64::MIN),
        }
    }

    fn row_precedence(&self) -> Precedence {
        match self.batch.as_ref().and_then(|b| b.precedence.as_ref()) {
            Some(per_row) => per_row.get(self.row).copied().unwrap_or(self.precedence),
            None => self.precedence,
        }
    }
}

/// Rows of the output batch being built.
#[derive(Default)]
struct Output {
    ts: Vec<i64>,
    value: Vec<f64>,
    quality: Vec<u8>,
    buoys: Option<StringBuilder>,
    metrics: Option<StringBuilder>,
}

/// The merge's state between output batches.
struct Merger {
    cursors: Vec<Cursor>,
    /// Min-heap (by key, then input index) of the cursors holding a current row.
    heap: Vec<usize>,
    /// Whether every cursor got its first batch.
    started: bool,
    file_buoys: Arc<[Arc<str>]>,
    filter: ReadFilter,
    layout: Layout,
    columns: Vec<usize>,
    schema: SchemaRef,
    batch_rows: usize,
    out: Output,
    reservation: MemoryReservation,
    /// Bytes each cursor's current batch (and the buffered batches) hold, by cursor.
    held_bytes: Vec<usize>,
    /// The buffered rows to gather at the start.
    buffered: Option<BufferedRows>,
}

impl Merger {
    /// The next output batch, or `None` after the last.
    async fn next_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        if !self.started {
            self.start().await?;
        }
        let mut group: Vec<usize> = Vec::new();
        let mut rows = 0;
        while rows < self.batch_rows {
            let Some(&top) = self.heap.first() else { break };
            // Every input holding the smallest key: the candidates of one key.
            group.clear();
            self.heap_pop();
            group.push(top);
            while let Some(&next) = self.heap.first() {
                if self.cursors[next].key() != self.cursors[top].key() {
                    break;
                }
                self.heap_pop();
                group.push(next);
            }
            // The reference reader's order: inputs in selection order, the buffer last; a
            // candidate replaces the one kept so far by the engine's one rule.
            group.sort_unstable();
            let mut winner = group[0];
            for &i in &group[1..] {
                if self.cursors[i].row_precedence().replaces(self.cursors[winner].row_precedence()) {
                    winner = i;
                }
            }
            self.append(winner);
            rows += 1;
            for &i in &group {
                self.advance(i).await?;
            }
        }
        if rows == 0 {
            self.reservation.resize(0);
            return Ok(None);
        }
        self.emit(rows).map(Some)
    }

    /// Gathers the buffered rows and loads every input's first batch.
    async fn start(&mut self) -> DfResult<()> {
        self.started = true;
        if let Some(buffered) = self.buffered.take() {
            // Gathering and sorting buffered rows is CPU work over memory the buffer already
            // holds: keep it off the async workers.
            let grow = self.reservation.new_empty();
            let batches = tokio::task::spawn_blocking(move || buffered.gather(grow))
                .await
                .map_err(|e| DataFusionError::Internal(format!("merge task failed: {e}")))??;
            if !batches.is_empty() {
                let queued = batches.iter().map(|b| b.bytes).sum();
                self.cursors.push(Cursor {
                    feed: Feed::Batches(batches, queued),
                    tombstones: Vec::new(),
                    precedence: Precedence::buffered(0),
                    batch: None,
                    row: 0,
                });
            }
        }
        self.held_bytes = vec![0; self.cursors.len()];
        for i in 0..self.cursors.len() {
            self.load(i).await?;
        }
        Ok(())
    }

    /// Moves cursor `i` past its current row (to its next kept row), keeping the heap.
    async fn advance(&mut self, i: usize) -> DfResult<()> {
        let cursor = &mut self.cursors[i];
        cursor.row += 1;
        if cursor.batch.as_ref().is_some_and(|b| cursor.row < b.len()) {
            self.heap_push(i);
            return Ok(());
        }
        self.load(i).await
    }

    /// Loads cursor `i`'s next non-empty batch (rows it must not contribute removed) and puts
    /// it in the heap; or marks it done.
    async fn load(&mut self, i: usize) -> DfResult<()> {
        loop {
            let (next, queued_bytes) = match &mut self.cursors[i].feed {
                Feed::Stream(stream) => (Next::Batch(stream.next().await), 0),
                Feed::Batches(queue, queued) => {
                    let next = queue.pop_front();
                    *queued -= next.as_ref().map_or(0, |b| b.bytes).min(*queued);
                    (Next::Loaded(next.map(Box::new)), *queued)
                }
                Feed::Done => (Next::Loaded(None), 0),
            };
            let loaded = match next {
                Next::Batch(Some(batch)) => {
                    let batch = self.keep_rows(i, batch?)?;
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    Loaded::new(&batch, &self.layout, None)?
                }
                Next::Loaded(Some(loaded)) => *loaded,
                Next::Batch(None) | Next::Loaded(None) => {
                    let cursor = &mut self.cursors[i];
                    cursor.feed = Feed::Done;
                    cursor.batch = None;
                    return self.hold(i, 0);
                }
            };
            // The previous batch is released before the next is counted.
            self.cursors[i].batch = None;
            self.hold(i, loaded.bytes + queued_bytes)?;
            let cursor = &mut self.cursors[i];
            cursor.batch = Some(loaded);
            cursor.row = 0;
            self.heap_push(i);
            return Ok(());
        }
    }

    /// Records that cursor `i` now holds `bytes`, in the reservation.
    fn hold(&mut self, i: usize, bytes: usize) -> DfResult<()> {
        if let Some(held) = self.held_bytes.get_mut(i) {
            *held = bytes;
        }
        let total: usize = self.held_bytes.iter().sum();
        self.reservation.try_resize(total)
    }

    /// The rows of a file batch the merge may use: of the merged buoys, within the filter's
    /// key ranges, and not hidden by the file's tombstones (the reference reader drops the
    /// same rows before it merges).
    fn keep_rows(&self, i: usize, batch: RecordBatch) -> DfResult<RecordBatch> {
        let loaded = Loaded::new(&batch, &self.layout, None)?;
        let tombstones = &self.cursors[i].tombstones;
        let f = &self.filter;
        let mut all = true;
        let mut last_buoy: Option<(&str, bool)> = None;
        let mask: BooleanArray = (0..loaded.len())
            .map(|r| {
                let (buoy, metric, ts) = (loaded.buoy.value(r), loaded.metric.value(r), loaded.ts.value(r));
                // Rows come sorted by buoy: decide each buoy once.
                let buoy_kept = match last_buoy {
                    Some((b, kept)) if b == buoy => kept,
                    _ => {
                        let kept = self.file_buoys.binary_search_by(|x| (**x).cmp(buoy)).is_ok()
                            && f.buoys.as_ref().is_none_or(|w| w.iter().any(|x| x == buoy));
                        last_buoy = Some((buoy, kept));
                        kept
                    }
                };
                let keep = buoy_kept
                    && f.start.is_none_or(|s| ts >= s)
                    && f.end.is_none_or(|e| ts < e)
                    && f.metrics.as_ref().is_none_or(|w| w.iter().any(|x| x == metric))
                    && !tombstones.iter().any(|t| t.covers(buoy, metric, ts));
                all &= keep;
                Some(keep)
            })
            .collect();
        if all { Ok(batch) } else { Ok(filter_record_batch(&batch, &mask)?) }
    }

    /// Appends cursor `i`'s current row to the output.
    fn append(&mut self, i: usize) {
        let cursor = &self.cursors[i];
        let Some(b) = &cursor.batch else { return };
        let r = cursor.row;
        let out = &mut self.out;
        if self.columns.contains(&COL_BUOY) {
            out.buoys
                .get_or_insert_with(|| StringBuilder::with_capacity(self.batch_rows, self.batch_rows * 12))
                .append_value(b.buoy.value(r));
        }
        if self.columns.contains(&COL_METRIC) {
            out.metrics
                .get_or_insert_with(|| StringBuilder::with_capacity(self.batch_rows, self.batch_rows * 12))
                .append_value(b.metric.value(r));
        }
        out.ts.push(b.ts.value(r));
        if let Some(v) = &b.value {
            out.value.push(v.value(r));
        }
        if let Some(q) = &b.quality {
            out.quality.push(q.value(r));
        }
    }

    /// The output batch of the `rows` rows appended since the last.
    fn emit(&mut self, rows: usize) -> DfResult<RecordBatch> {
        let out = std::mem::take(&mut self.out);
        let (mut buoys, mut metrics) = (out.buoys, out.metrics);
        let mut ts = Some(out.ts);
        let mut value = Some(out.value);
        let mut quality = Some(out.quality);
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for &c in &self.columns {
            let array: ArrayRef = match c {
                COL_BUOY => Arc::new(
                    buoys.take().map_or_else(|| StringArray::from(Vec::<&str>::new()), |mut b| b.finish()),
                ),
                COL_METRIC => Arc::new(
                    metrics.take().map_or_else(|| StringArray::from(Vec::<&str>::new()), |mut b| b.finish()),
                ),
                COL_TS => Arc::new(
                    TimestampNanosecondArray::from(ts.take().unwrap_or_default()).with_timezone(TS_TZ),
                ),
                COL_VALUE => Arc::new(Float64Array::from(value.take().unwrap_or_default())),
                COL_QUALITY => Arc::new(UInt8Array::from(quality.take().unwrap_or_default())),
                other => return Err(DataFusionError::Internal(format!("no readings column {other}"))),
            };
            if array.len() != rows {
                return Err(DataFusionError::Internal(format!(
                    "merge column {c} has {} rows, not {rows}",
                    array.len()
                )));
            }
            arrays.push(array);
        }
        let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)?)
    }

    /// True when cursor `a`'s current row sorts before cursor `b`'s (ties: lower input first).
    fn before(&self, a: usize, b: usize) -> bool {
        (self.cursors[a].key(), a) < (self.cursors[b].key(), b)
    }

    fn heap_push(&mut self, i: usize) {
        self.heap.push(i);
        let mut child = self.heap.len() - 1;
        while child > 0 {
            let parent = (child - 1) / 2;
            if !self.before(self.heap[child], self.heap[parent]) {
                break;
            }
            self.heap.swap(child, parent);
            child = parent;
        }
    }

    fn heap_pop(&mut self) {
        let Some(last) = self.heap.pop() else { return };
        if self.heap.is_empty() {
            return;
        }
        self.heap[0] = last;
        let mut parent = 0;
        loop {
            let (left, right) = (2 * parent + 1, 2 * parent + 2);
            let mut smallest = parent;
            if left < self.heap.len() && self.before(self.heap[left], self.heap[smallest]) {
                smallest = left;
            }
            if right < self.heap.len() && self.before(self.heap[right], self.heap[smallest]) {
                smallest = right;
            }
            if smallest == parent {
                break;
            }
            self.heap.swap(parent, smallest);
            parent = smallest;
        }
    }
}

/// One buffered row that may be merged.
struct Candidate {
    buoy: Arc<str>,
    metric: Arc<str>,
    ts: i64,
    precedence: Precedence,
    /// Arrival order, for rows of one batch naming a key twice (the later wins).
    order: u64,
    value: f64,
    quality: u8,
}

/// The buffered rows a merge needs, gathered into sorted, deduplicated batches.
struct BufferedRows {
    chunks: Vec<Arc<Chunk>>,
    tombstones: Vec<Arc<Tombstone>>,
    filter: ReadFilter,
    batch_rows: usize,
    layout: Layout,
    input_schema: SchemaRef,
}

impl BufferedRows {
    fn keeps_range(&self, lo: i64, hi: i64) -> bool {
        let f = &self.filter;
        f.start.is_none_or(|s| hi >= s) && f.end.is_none_or(|e| lo < e)
    }

    /// The buffered rows within the filter, tombstones applied, one per key (last write
    /// wins), sorted by key, in batches. `reservation` accounts for them (the buffer already
    /// holds them, bounded by the engine's buffer size; this is the merge's copy).
    fn gather(self, reservation: MemoryReservation) -> DfResult<VecDeque<Loaded>> {
        let mut rows: Vec<Candidate> = Vec::new();
        let mut order = 0u64;
        for chunk in &self.chunks {
            // Decided once per dictionary entry, not per row: a one-buoy query over a large
            // buffer skips every other buoy's rows by one array lookup each.
            let buoy_kept: Vec<bool> = chunk
                .buoy_names
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    let (lo, hi) = chunk.buoy_ranges.get(k).copied().unwrap_or((chunk.ts_min, chunk.ts_max));
                    self.filter.buoys.as_ref().is_none_or(|w| w.iter().any(|x| x == &**b))
                        && self.keeps_range(lo, hi)
                })
                .collect();
            if !buoy_kept.iter().any(|&k| k) {
                continue;
            }
            let metric_kept: Vec<bool> = chunk
                .metric_names
                .iter()
                .map(|m| self.filter.metrics.as_ref().is_none_or(|w| w.iter().any(|x| x == &**m)))
                .collect();
            let before = rows.len();
            for i in 0..chunk.len() {
                let (buoy_key, metric_key) = (chunk.buoy_keys[i] as usize, chunk.metric_keys[i] as usize);
                if !buoy_kept.get(buoy_key).copied().unwrap_or(false)
                    || !metric_kept.get(metric_key).copied().unwrap_or(false)
                {
                    continue;
                }
                let (Some(buoy), Some(metric)) =
                    (chunk.buoy_names.get(buoy_key), chunk.metric_names.get(metric_key))
                else {
                    return Err(DataFusionError::Internal("buffered row outside its dictionary".into()));
                };
                let ts = chunk.timestamps[i];
                if !self.keeps_range(ts, ts) {
                    continue;
                }
                let seq = chunk.seqs[i];
                if self.tombstones.iter().any(|t| t.seq > seq && t.covers(buoy, metric, ts)) {
                    continue;
                }
                order += 1;
                rows.push(Candidate {
                    buoy: buoy.clone(),
                    metric: metric.clone(),
                    ts,
                    precedence: Precedence::buffered(seq),
                    order,
                    value: chunk.values[i],
                    quality: chunk.quality[i],
                });
            }
            reservation.try_grow((rows.len() - before).saturating_mul(BUFFERED_ROW_BYTES))?;
        }
        // Last write wins: sort by key, precedence and arrival; within a key each candidate then
        // `replaces` the one before it (ties in precedence go to the later arrival).
        rows.sort_unstable_by(|a, b| {
            (&a.buoy, &a.metric, a.ts, a.precedence, a.order).cmp(&(
                &b.buoy,
                &b.metric,
                b.ts,
                b.precedence,
                b.order,
            ))
        });
        let mut winners: Vec<Candidate> = Vec::with_capacity(rows.len());
        for row in rows {
            match winners.last_mut() {
                Some(last) if last.buoy == row.buoy && last.metric == row.metric && last.ts == row.ts => {
                    if row.precedence.replaces(last.precedence) {
                        *last = row
                    }
                }
                _ => winners.push(row),
            }
        }
        let mut batches = VecDeque::with_capacity(winners.len().div_ceil(self.batch_rows));
        for part in winners.chunks(self.batch_rows) {
            batches.push_back(self.batch(part)?);
        }
        // The merge accounts for the batches as its cursor holds them.
        reservation.resize(0);
        Ok(batches)
    }

    fn batch(&self, rows: &[Candidate]) -> DfResult<Loaded> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.input_schema.fields().len());
        for field in self.input_schema.fields() {
            let c = crate::table::readings_schema().index_of(field.name())?;
            let array: ArrayRef = match c {
                COL_BUOY | COL_METRIC => {
                    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 12);
                    for r in rows {
                        b.append_value(if c == COL_BUOY { &*r.buoy } else { &*r.metric });
                    }
                    Arc::new(b.finish())
                }
                COL_TS => Arc::new(
                    TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.ts))
                        .with_timezone(TS_TZ),
                ),
                COL_VALUE => Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
                COL_QUALITY => Arc::new(UInt8Array::from_iter_values(rows.iter().map(|r| r.quality))),
                other => return Err(DataFusionError::Internal(format!("no readings column {other}"))),
            };
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(self.input_schema.clone(), arrays)?;
        Loaded::new(&batch, &self.layout, Some(rows.iter().map(|r| r.precedence).collect()))
    }
}
