//! Line charts as SVG, rendered on the server (no script draws them): per metric, one chart;
//! per buoy, a band from each bucket's min to its max and a line through its means. A gap of
//! more than one empty bucket breaks the line. Accessible: `role="img"` with a `<title>` and a
//! `<desc>`, and the same numbers as a table right after each chart.
//!
//! The SVG carries its scales as `data-` attributes (time range in ms, value range, plot box),
//! so the live script can place new points without knowing how the server drew the rest.

use maud::{Markup, html};

use super::series::Series;
use crate::api::format_time;

/// Width of the SVG coordinate system.
const WIDTH: f64 = 800.0;
/// Height of the SVG coordinate system.
const HEIGHT: f64 = 260.0;
/// Left margin (value labels).
const LEFT: f64 = 64.0;
/// Right margin.
const RIGHT: f64 = 12.0;
/// Top margin.
const TOP: f64 = 12.0;
/// Bottom margin (time labels).
const BOTTOM: f64 = 28.0;
/// Line colours of the buoys, in selection order (distinct under common colour blindness).
pub(crate) const COLOURS: [&str; 4] = ["#0072b2", "#d55e00", "#009e73", "#cc79a7"];

const NS_PER_MS: i64 = 1_000_000;

/// A value range with room around it (a flat series gets ±1).
fn value_range(series: &[&Series]) -> (f64, f64) {
    let mut low = f64::INFINITY;
    let mut high = f64::NEG_INFINITY;
    for bucket in series.iter().flat_map(|s| &s.buckets) {
        low = low.min(bucket.min);
        high = high.max(bucket.max);
    }
    if !low.is_finite() || !high.is_finite() {
        return (0.0, 1.0);
    }
    if (high - low).abs() < f64::EPSILON {
        return (low - 1.0, high + 1.0);
    }
    let pad = (high - low) * 0.05;
    (low - pad, high + pad)
}

struct Scale {
    start_ns: i64,
    end_ns: i64,
    low: f64,
    high: f64,
}

impl Scale {
    fn x(&self, ts_ns: i64) -> f64 {
        let span = (self.end_ns - self.start_ns).max(1) as f64;
        LEFT + (ts_ns - self.start_ns) as f64 / span * (WIDTH - LEFT - RIGHT)
    }
    fn y(&self, value: f64) -> f64 {
        TOP + (self.high - value) / (self.high - self.low) * (HEIGHT - TOP - BOTTOM)
    }
}

/// The runs of consecutive buckets (a run ends where more than one bucket is missing).
fn runs(series: &Series, bucket_ns: i64) -> Vec<&[super::series::Bucket]> {
    let mut out = Vec::new();
    let mut begin = 0;
    for i in 1..=series.buckets.len() {
        let split = i == series.buckets.len()
            || series.buckets[i].start_ns - series.buckets[i - 1].start_ns > 2 * bucket_ns;
        if split {
            out.push(&series.buckets[begin..i]);
            begin = i;
        }
    }
    out
}

/// The chart of `metric` over `[start_ns, end_ns)`, its time axis running to `axis_end_ns`
/// (past `end_ns` for a range that ends now: room for live points): one line and band per
/// series in `series` (all of that metric; `buoys` gives each buoy its colour by position).
pub(crate) fn chart(
    metric: &str,
    buoys: &[String],
    series: &[&Series],
    (start_ns, end_ns, axis_end_ns): (i64, i64, i64),
    bucket_ns: i64,
) -> Markup {
    let (low, high) = value_range(series);
    let scale = Scale { start_ns, end_ns: axis_end_ns, low, high };
    let title_id = format!("chart-{metric}-title");
    let desc_id = format!("chart-{metric}-desc");
    let points = series.iter().map(|s| s.buckets.len()).sum::<usize>();
    let description = format!(
        "Minimum, mean and maximum of {metric} per {} s bucket from {} to {} for {}; {points} buckets in all. \
         The table below lists the same numbers.",
        bucket_ns / 1_000_000_000,
        format_time(start_ns),
        format_time(end_ns),
        buoys.join(", "),
    );
    let colour_of = |buoy: &str| {
        buoys.iter().position(|b| b == buoy).and_then(|i| COLOURS.get(i)).copied().unwrap_or("#000000")
    };
    let plot_bottom = HEIGHT - BOTTOM;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox={"0 0 " (WIDTH) " " (HEIGHT)} role="img"
            aria-labelledby={(title_id) " " (desc_id)} class="chart" data-metric=(metric)
            data-start-ms=(start_ns / NS_PER_MS) data-axis-end-ms=(axis_end_ns / NS_PER_MS)
            data-low=(low) data-high=(high)
            data-left=(LEFT) data-right=(WIDTH - RIGHT) data-top=(TOP) data-bottom=(plot_bottom) {
            title id=(title_id) { (metric) }
            desc id=(desc_id) { (description) }
            rect x=(LEFT) y=(TOP) width=(WIDTH - LEFT - RIGHT) height=(plot_bottom - TOP) fill="none" stroke="#888888" {}
            text x=(LEFT - 4.0) y=(TOP + 10.0) text-anchor="end" font-size="11" { (format!("{high:.3}")) }
            text x=(LEFT - 4.0) y=(plot_bottom) text-anchor="end" font-size="11" { (format!("{low:.3}")) }
            text x=(LEFT) y=(HEIGHT - 8.0) font-size="11" { (format_time(start_ns)) }
            text x=(WIDTH - RIGHT) y=(HEIGHT - 8.0) text-anchor="end" font-size="11" { (format_time(axis_end_ns)) }
            @for s in series {
                g class="series" data-buoy=(s.buoy) stroke=(colour_of(&s.buoy)) fill=(colour_of(&s.buoy)) {
                    @for run in runs(s, bucket_ns) {
                        @let band = run.iter().map(|b| format!("{:.2},{:.2}", scale.x(b.start_ns), scale.y(b.max)))
                            .chain(run.iter().rev().map(|b| format!("{:.2},{:.2}", scale.x(b.start_ns), scale.y(b.min))))
                            .collect::<Vec<_>>().join(" ");
                        @let line = run.iter().map(|b| format!("{:.2},{:.2}", scale.x(b.start_ns), scale.y(b.mean)))
                            .collect::<Vec<_>>().join(" ");
                        polygon class="band" points=(band) fill-opacity="0.2" stroke="none" {}
                        polyline class="mean" points=(line) fill="none" stroke-width="1.5" {}
                    }
                    polyline class="live" points="" fill="none" stroke-width="1.5" stroke-dasharray="4 2" {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::series::Bucket;
    use super::*;

    fn bucket(start_ns: i64, value: f64) -> Bucket {
        Bucket { start_ns, min: value, mean: value, max: value, count: 1 }
    }

    #[test]
    fn a_gap_of_more_than_one_bucket_breaks_the_line() {
        let series = Series {
            buoy: "b".into(),
            metric: "ph".into(),
            buckets: vec![bucket(0, 1.0), bucket(10, 2.0), bucket(30, 3.0), bucket(60, 4.0)],
        };
        let lengths: Vec<usize> = runs(&series, 10).iter().map(|r| r.len()).collect();
        assert_eq!(lengths, vec![3, 1]);
    }

    #[test]
    fn the_scale_maps_the_range_onto_the_plot_box() {
        let scale = Scale { start_ns: 100, end_ns: 200, low: 0.0, high: 10.0 };
        assert_eq!((scale.x(100), scale.x(200)), (LEFT, WIDTH - RIGHT));
        assert_eq!((scale.y(10.0), scale.y(0.0)), (TOP, HEIGHT - BOTTOM));
    }
}
