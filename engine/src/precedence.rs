//! Last-write-wins, the one rule every reader and writer of rows applies (DESIGN.md, *Data
//! model*): of the rows of one key `(buoy, metric, ts)` the row of highest [`Precedence`] is
//! kept. The flush (sort of buffered rows), compaction (merge of files), the reference reader
//! ([`crate::Snapshot::read`]) and the query crate's merge all decide with
//! [`Precedence::replaces`].
//!
//! The order: a buffered row beats every file row (the buffer holds only rows newer than the
//! committed flushes it overlaps); among files the higher flush generation wins (a compaction's
//! output takes the highest generation of its inputs); among buffered rows the higher WAL
//! sequence wins. Between rows of equal precedence (one batch naming a key twice) the row seen
//! later in arrival order wins.

/// The top bit marks a buffered row; the rest is its sequence or its file's generation.
const BUFFERED: u64 = 1 << 63;

/// How late a row was written, compared across the buffer and files. Eight bytes, so a flush
/// can keep one per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Precedence(u64);

impl Precedence {
    /// A row of a partition file of flush generation `generation`. Generations stay far below
    /// 2^63 (one per flush).
    pub fn file(generation: u64) -> Self {
        debug_assert!(generation < BUFFERED, "generation {generation} out of range");
        Self(generation & !BUFFERED)
    }

    /// A buffered row of WAL sequence `seq`. Sequences stay far below 2^63 (one per entry).
    pub fn buffered(seq: u64) -> Self {
        debug_assert!(seq < BUFFERED, "sequence {seq} out of range");
        Self(BUFFERED | seq)
    }

    /// The generation (file row) or WAL sequence (buffered row).
    pub fn order(self) -> u64 {
        self.0 & !BUFFERED
    }

    /// Whether a row of this precedence, met after a row of `current` for the same key,
    /// replaces it: higher precedence wins, and among equals the later row.
    pub fn replaces(self, current: Self) -> bool {
        self >= current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_beats_files_then_higher_generation_or_sequence_then_the_later_row() {
        assert!(Precedence::buffered(1).replaces(Precedence::file(1_000)));
        assert!(!Precedence::file(1_000).replaces(Precedence::buffered(1)));
        assert!(Precedence::file(3).replaces(Precedence::file(2)));
        assert!(!Precedence::file(2).replaces(Precedence::file(3)));
        assert!(Precedence::buffered(9).replaces(Precedence::buffered(8)));
        assert!(!Precedence::buffered(8).replaces(Precedence::buffered(9)));
        assert!(Precedence::buffered(5).replaces(Precedence::buffered(5)));
        assert_eq!(Precedence::buffered(42).order(), 42);
        assert_eq!(Precedence::file(7).order(), 7);
    }
}
