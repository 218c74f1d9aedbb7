//! The analysts' query mix: the benchmark queries (BENCHMARKS.md, Query Q1-Q4) and their
//! weights, parsed from `name=weight,...`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::SeededRng;

/// Largest weight of one query kind (keeps the sum far from overflow).
pub const MIX_WEIGHT_MAX: u32 = 1_000_000;

/// One benchmark query an analyst runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QueryKind {
    /// Latest value of every metric of one buoy (SQL `last_value(value ORDER BY ts)` per metric).
    LastValue,
    /// One buoy, one metric, 10 minutes of raw rows (`GET /api/telemetry`).
    RawRange,
    /// One buoy, all metrics, hourly means over a day (SQL `date_bin`).
    HourlyMeans,
    /// Fleet-wide count and mean of one metric over an hour (SQL).
    FleetAggregate,
}

impl QueryKind {
    /// Every kind, in report order.
    pub const ALL: [QueryKind; 4] =
        [QueryKind::LastValue, QueryKind::RawRange, QueryKind::HourlyMeans, QueryKind::FleetAggregate];

    /// Name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            QueryKind::LastValue => "last_value",
            QueryKind::RawRange => "raw_range",
            QueryKind::HourlyMeans => "hourly_means",
            QueryKind::FleetAggregate => "fleet_aggregate",
        }
    }

    /// True for the queries about one buoy (the 200 queries/s target).
    pub fn is_one_buoy(self) -> bool {
        !matches!(self, QueryKind::FleetAggregate)
    }
}

/// Weighted choice among the query kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryMix {
    /// `(kind, weight)`, weights above zero, each kind at most once.
    entries: Vec<(QueryKind, u32)>,
    total: u64,
}

/// The default mix: mostly one-buoy queries, as a dashboard-heavy analyst population makes.
pub const QUERY_MIX_DEFAULT: &str = "last_value=4,raw_range=4,hourly_means=1,fleet_aggregate=1";

impl QueryMix {
    /// Parses `name=weight,...` (names of [`QueryKind::name`]; weight 0 leaves a kind out).
    pub fn parse(text: &str) -> Result<Self> {
        let mut entries: Vec<(QueryKind, u32)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("query mix entry {part:?}: expected name=weight")))?;
            let kind = QueryKind::ALL.into_iter().find(|k| k.name() == name.trim()).ok_or_else(|| {
                Error::Config(format!(
                    "query mix: unknown query {name:?}; known: last_value, raw_range, hourly_means, \
                     fleet_aggregate"
                ))
            })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("query mix: weight of {name} is not a whole number")))?;
            if weight > MIX_WEIGHT_MAX {
                return Err(Error::Config(format!("query mix: weight of {name} above {MIX_WEIGHT_MAX}")));
            }
            if entries.iter().any(|(k, _)| *k == kind) {
                return Err(Error::Config(format!("query mix: {name} given twice")));
            }
            if weight > 0 {
                entries.push((kind, weight));
            }
        }
        let total = entries.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Err(Error::Config("query mix: at least one query needs a weight above 0".into()));
        }
        Ok(Self { entries, total })
    }

    /// The kinds with a weight, in the order given.
    pub fn kinds(&self) -> impl Iterator<Item = QueryKind> + '_ {
        self.entries.iter().map(|(k, _)| *k)
    }

    /// The kind whose share of the total weight `ticket` (in `0..total`) falls into.
    pub fn kind_for(&self, ticket: u64) -> QueryKind {
        let mut ticket = ticket % self.total;
        for (kind, weight) in &self.entries {
            if ticket < u64::from(*weight) {
                return *kind;
            }
            ticket -= u64::from(*weight);
        }
        // `ticket < total` = the sum of the weights, so the loop returned.
        self.entries.last().map_or(QueryKind::LastValue, |(k, _)| *k)
    }

    /// A random kind, each with probability weight / total.
    pub fn pick(&self, rng: &mut SeededRng) -> QueryKind {
        self.kind_for(rng.below(self.total))
    }
}
