//! Per-buoy batch-sequence window that makes retries idempotent.
//!
//! Each buoy numbers its batches. The window remembers the highest sequence seen and which of the
//! [`DEDUP_WINDOW`] sequences below it were stored, like an anti-replay window: a batch inside the
//! window that was seen is a duplicate, one that was not is new (out-of-order delivery from many
//! in-flight batches is fine), and one below the window is refused as stale, never stored twice.

pub use bluewave_model::{DEDUP_WINDOW, UNSEQUENCED};

const WORDS: usize = (DEDUP_WINDOW / 64) as usize;
const _: () = assert!(DEDUP_WINDOW.is_multiple_of(64));

/// What the window says of a batch sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not seen: store it.
    New,
    /// Seen before: acknowledge again, store nothing.
    Duplicate,
    /// Below the window: cannot be told apart from an old retry.
    Stale,
}

/// The window of one buoy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupWindow {
    /// Highest sequence stored, if any.
    highest: Option<u64>,
    /// Bit `i` (word `i / 64`, bit `i % 64`) is set when `highest - i` was stored.
    bits: [u64; WORDS],
}

impl Default for DedupWindow {
    fn default() -> Self {
        Self { highest: None, bits: [0; WORDS] }
    }
}

impl DedupWindow {
    /// Classifies `seq` without recording it.
    pub fn check(&self, seq: u64) -> Seen {
        let Some(highest) = self.highest else { return Seen::New };
        if seq > highest {
            return Seen::New;
        }
        let back = highest - seq;
        if back >= DEDUP_WINDOW {
            return Seen::Stale;
        }
        let (word, bit) = ((back / 64) as usize, back % 64);
        if self.bits[word] & (1 << bit) != 0 { Seen::Duplicate } else { Seen::New }
    }

    /// Records `seq` as stored (idempotent; sequences below the window are ignored).
    pub fn record(&mut self, seq: u64) {
        match self.highest {
            None => {
                self.highest = Some(seq);
                self.bits = [0; WORDS];
                self.bits[0] = 1;
            }
            Some(highest) if seq > highest => {
                self.shift(seq - highest);
                self.highest = Some(seq);
                self.bits[0] |= 1;
            }
            Some(highest) => {
                let back = highest - seq;
                if back < DEDUP_WINDOW {
                    self.bits[(back / 64) as usize] |= 1 << (back % 64);
                }
            }
        }
    }

    /// Moves every bit `by` places towards older sequences.
    fn shift(&mut self, by: u64) {
        if by >= DEDUP_WINDOW {
            self.bits = [0; WORDS];
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        for i in (0..WORDS).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.bits[s]);
            let lo = src.and_then(|s| s.checked_sub(1)).map_or(0, |s| self.bits[s]);
            self.bits[i] = if bits == 0 { hi } else { (hi << bits) | (lo >> (64 - bits)) };
        }
    }

    /// Persisted form: `version u8 | has_highest u8 | highest u64 | bits u64 × WORDS`, LE.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10 + WORDS * 8);
        out.push(1);
        out.push(u8::from(self.highest.is_some()));
        out.extend_from_slice(&self.highest.unwrap_or(0).to_le_bytes());
        for w in &self.bits {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Parses [`Self::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 10 + WORDS * 8 || bytes[0] != 1 || bytes[1] > 1 {
            return None;
        }
        let highest = u64::from_le_bytes(bytes[2..10].try_into().ok()?);
        let mut bits = [0u64; WORDS];
        for (i, w) in bits.iter_mut().enumerate() {
            let at = 10 + i * 8;
            *w = u64::from_le_bytes(bytes[at..at + 8].try_into().ok()?);
        }
        Some(Self { highest: (bytes[1] == 1).then_some(highest), bits })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Against a model that remembers every sequence: inside the window the answers agree;
        /// below it the window says Stale.
        #[test]
        fn agrees_with_a_set(ops in proptest::collection::vec(0u64..20_000, 1..400)) {
            let mut w = DedupWindow::default();
            let mut seen = BTreeSet::new();
            for seq in ops {
                let highest = seen.iter().next_back().copied();
                let expected = match highest {
                    Some(h) if seq + DEDUP_WINDOW <= h => Seen::Stale,
                    _ if seen.contains(&seq) => Seen::Duplicate,
                    _ => Seen::New,
                };
                prop_assert_eq!(w.check(seq), expected);
                if expected == Seen::New {
                    w.record(seq);
                    seen.insert(seq);
                }
                prop_assert_eq!(DedupWindow::decode(&w.encode()).unwrap(), w.clone());
            }
        }
    }

    #[test]
    fn shifts_across_words() {
        let mut w = DedupWindow::default();
        w.record(10);
        w.record(75);
        w.record(200);
        assert_eq!(w.check(10), Seen::Duplicate);
        assert_eq!(w.check(75), Seen::Duplicate);
        assert_eq!(w.check(11), Seen::New);
        w.record(200 + DEDUP_WINDOW);
        assert_eq!(w.check(200), Seen::Stale);
        assert_eq!(w.check(201), Seen::New);
    }
}
