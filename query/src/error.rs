//! The crate's one error type. User mistakes and refusals (a 4xx for the web crate) are kept
//! apart from internal faults (a 5xx) so callers can map them without parsing messages.

use datafusion::error::DataFusionError;

/// Everything a query can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL text does not parse or does not plan (unknown table or column, type mismatch).
    #[error("invalid SQL: {0}")]
    InvalidSql(String),
    /// The statement is valid SQL but not allowed here (DDL, DML, COPY, SET, several statements…).
    #[error(
        "statement refused: {0}; only a single read-only query (SELECT, WITH, VALUES, EXPLAIN) is allowed"
    )]
    Refused(String),
    /// A typed filter or cursor is malformed (bad id, inverted range, damaged cursor).
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// The caller asked for data its access policy does not grant.
    #[error("access denied: {0}")]
    PolicyDenied(String),
    /// The result would have more rows than the caller may receive.
    #[error("row limit reached: the result has more than {rows_max} rows; add filters or a LIMIT")]
    RowLimit {
        /// The cap that was hit.
        rows_max: u64,
    },
    /// The query needed more memory than its pool allows.
    #[error("memory limit reached: the query needs more than {memory_max_bytes} bytes ({detail})")]
    MemoryLimit {
        /// The pool size.
        memory_max_bytes: usize,
        /// What DataFusion was doing.
        detail: String,
    },
    /// The query ran longer than its time budget and was cancelled.
    #[error("query timed out after {timeout_ms} ms and was cancelled")]
    Timeout {
        /// The budget.
        timeout_ms: u64,
    },
    /// The query handed no batch to its consumer for longer than its stall limit and was
    /// cancelled.
    #[error("query produced nothing for {stall_ms} ms and was cancelled")]
    Stalled {
        /// The stall limit.
        stall_ms: u64,
    },
    /// A table function call asks for more rows than the policy allows; refused before it ran.
    #[error(
        "table function {function} would produce more than {rows_max} rows; narrow its range or raise its step"
    )]
    TableFunctionLimit {
        /// The function (`generate_series`, `range`).
        function: &'static str,
        /// The cap.
        rows_max: u64,
    },
    /// Too many queries are running; retry later.
    #[error("query service busy: {queries_max} queries already running")]
    Busy {
        /// The concurrency cap.
        queries_max: usize,
    },
    /// The query service configuration is invalid.
    #[error("invalid query configuration: {0}")]
    InvalidConfig(String),
    /// The storage engine failed.
    #[error("storage engine: {0}")]
    Engine(#[from] bluewave_engine::Error),
    /// DataFusion failed while executing a valid plan, or an invariant of this crate broke.
    #[error("internal query error: {0}")]
    Internal(String),
    /// Writing an output format failed.
    #[error("encoding the result failed: {0}")]
    Encode(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True for mistakes and limits on the caller's side (bad SQL, refusal, bad filter, policy
    /// denial, row/memory/time limits, busy): the web crate answers these with a 4xx/429.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidSql(_)
                | Self::Refused(_)
                | Self::InvalidFilter(_)
                | Self::PolicyDenied(_)
                | Self::RowLimit { .. }
                | Self::MemoryLimit { .. }
                | Self::Timeout { .. }
                | Self::Stalled { .. }
                | Self::TableFunctionLimit { .. }
                | Self::Busy { .. }
        )
    }

    /// A stable machine-readable code per variant, for API answers and for the error record
    /// at the end of a streamed result (`query/README.md`, *Errors after the first byte*).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidSql(_) => "invalid_sql",
            Self::Refused(_) => "statement_refused",
            Self::InvalidFilter(_) => "invalid_filter",
            Self::PolicyDenied(_) => "policy_denied",
            Self::RowLimit { .. } => "query_row_limit",
            Self::MemoryLimit { .. } => "query_memory_limit",
            Self::Timeout { .. } => "query_timeout",
            Self::Stalled { .. } => "query_stalled",
            Self::TableFunctionLimit { .. } => "table_function_limit",
            Self::Busy { .. } => "query_busy",
            Self::InvalidConfig(_) | Self::Engine(_) | Self::Internal(_) | Self::Encode(_) => "internal",
        }
    }

    /// Maps a DataFusion error met while planning a query: SQL and plan errors are the
    /// caller's; resource exhaustion is a memory limit; the rest is internal.
    pub(crate) fn from_planning(e: DataFusionError, memory_max_bytes: usize) -> Self {
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => Self::InvalidSql(e.find_root().to_string()),
            _ => Self::from_execution(e, memory_max_bytes),
        }
    }

    /// Maps a DataFusion error met while executing a plan.
    pub(crate) fn from_execution(e: DataFusionError, memory_max_bytes: usize) -> Self {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(detail) => {
                Self::MemoryLimit { memory_max_bytes, detail: detail.clone() }
            }
            DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
                Some(ours) => ours.clone_shallow(),
                None => Self::Internal(e.to_string()),
            },
            DataFusionError::ArrowError(err, _)
                if matches!(
                    err.as_ref(),
                    datafusion::arrow::error::ArrowError::CastError(_)
                        | datafusion::arrow::error::ArrowError::DivideByZero
                        | datafusion::arrow::error::ArrowError::ArithmeticOverflow(_)
                ) =>
            {
                // Casts and arithmetic on the caller's own expressions.
                Self::InvalidSql(err.to_string())
            }
            _ => Self::Internal(e.to_string()),
        }
    }

    /// A copy for errors that travel through DataFusion as `External` (the engine error is not
    /// `Clone`, so it keeps its message as an internal error).
    fn clone_shallow(&self) -> Self {
        match self {
            Self::InvalidSql(m) => Self::InvalidSql(m.clone()),
            Self::Refused(m) => Self::Refused(m.clone()),
            Self::InvalidFilter(m) => Self::InvalidFilter(m.clone()),
            Self::PolicyDenied(m) => Self::PolicyDenied(m.clone()),
            Self::RowLimit { rows_max } => Self::RowLimit { rows_max: *rows_max },
            Self::MemoryLimit { memory_max_bytes, detail } => {
                Self::MemoryLimit { memory_max_bytes: *memory_max_bytes, detail: detail.clone() }
            }
            Self::Timeout { timeout_ms } => Self::Timeout { timeout_ms: *timeout_ms },
            Self::Stalled { stall_ms } => Self::Stalled { stall_ms: *stall_ms },
            Self::TableFunctionLimit { function, rows_max } => {
                Self::TableFunctionLimit { function, rows_max: *rows_max }
            }
            Self::Busy { queries_max } => Self::Busy { queries_max: *queries_max },
            Self::InvalidConfig(m) => Self::InvalidConfig(m.clone()),
            Self::Engine(e) => Self::Internal(format!("storage engine: {e}")),
            Self::Internal(m) => Self::Internal(m.clone()),
            Self::Encode(m) => Self::Encode(m.clone()),
        }
    }
}
