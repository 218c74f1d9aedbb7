//! The live progress bar (indicatif, on stderr; hidden when stderr is not a terminal): elapsed
//! time of the run and the live rate of acknowledged readings or answered queries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the bar is redrawn, ms.
const REFRESH_MS: u64 = 500;

/// A bar that follows up to three counters until [`Progress::finish`].
#[derive(Debug)]
pub struct Progress {
    stop: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// One counter shown on the bar with its live rate.
#[derive(Clone, Debug)]
pub struct Shown {
    /// Label (`readings`, `queries`).
    pub label: &'static str,
    /// The counter.
    pub counter: Arc<AtomicU64>,
}

impl Progress {
    /// Starts a bar of `total` (warm-up plus measured period) showing `counters` and the
    /// error count.
    pub fn start(title: &str, total: Duration, shown: Vec<Shown>, errors: Arc<AtomicU64>) -> Self {
        let bar = ProgressBar::new(total.as_secs().max(1));
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} s {msg}")
        {
            bar.set_style(style);
        }
        bar.set_prefix(title.to_owned());
        let stop = Arc::new(AtomicU64::new(0));
        let stop_flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut last: Vec<u64> = shown.iter().map(|s| s.counter.load(Ordering::Relaxed)).collect();
            let mut last_at = Instant::now();
            let mut ticker = tokio::time::interval(Duration::from_millis(REFRESH_MS));
            while stop_flag.load(Ordering::Relaxed) == 0 {
                ticker.tick().await;
                let now = Instant::now();
                let seconds = now.duration_since(last_at).as_secs_f64().max(1e-3);
                let mut message = String::new();
                for (s, previous) in shown.iter().zip(last.iter_mut()) {
                    let value = s.counter.load(Ordering::Relaxed);
                    let rate = value.saturating_sub(*previous) as f64 / seconds;
                    message.push_str(&format!("{} {} ({:.0}/s)  ", s.label, value, rate));
                    *previous = value;
                }
                message.push_str(&format!("errors {}", errors.load(Ordering::Relaxed)));
                last_at = now;
                bar.set_position(started.elapsed().as_secs());
                bar.set_message(message);
            }
            bar.finish_and_clear();
        });
        Self { stop, task: Some(task) }
    }

    /// Removes the bar.
    pub async fn finish(mut self) {
        self.stop.store(1, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(1, Ordering::Relaxed);
    }
}
