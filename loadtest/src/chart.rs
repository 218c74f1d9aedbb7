//! A self-contained SVG chart of a run: throughput on top, latency (p50 and p99) below, and,
//! when the server's compaction debt was sampled, generations per partition (most, total) and
//! bytes waiting for compaction, all against time. No scripts, no external fonts or links, so
//! it opens anywhere offline.

use std::fmt::Write as _;

use crate::debt::DebtPoint;
use crate::timeline::TimelinePoint;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 240.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_TOP: f64 = 48.0;
const PANEL_GAP: f64 = 56.0;
const MARGIN_BOTTOM: f64 = 40.0;

/// The chart of `points` (and of `debt`, when sampled) as an SVG document titled `title`.
pub fn render_svg(title: &str, points: &[TimelinePoint], debt: &[DebtPoint]) -> String {
    let panels = if debt.is_empty() { 2.0 } else { 4.0 };
    let height = MARGIN_TOP + panels * PANEL_HEIGHT + (panels - 1.0) * PANEL_GAP + MARGIN_BOTTOM;
    let t_max = points.iter().map(|p| p.t_s).chain(debt.iter().map(|d| d.t_s)).fold(0.0, f64::max).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(svg, r#"<text x="{MARGIN_LEFT}" y="24" font-size="16">{}</text>"#, escape(title));
    let throughput: Vec<(f64, f64)> = points.iter().map(|p| (p.t_s, p.readings_per_s)).collect();
    panel(&mut svg, MARGIN_TOP, t_max, "readings/s", &[("#1f6fb2", "acknowledged", &throughput)]);
    let p50: Vec<(f64, f64)> = points.iter().map(|p| (p.t_s, p.p50_ms)).collect();
    let p99: Vec<(f64, f64)> = points.iter().map(|p| (p.t_s, p.p99_ms)).collect();
    panel(
        &mut svg,
        MARGIN_TOP + PANEL_HEIGHT + PANEL_GAP,
        t_max,
        "latency, ms",
        &[("#2a9d4b", "p50", &p50), ("#c0392b", "p99", &p99)],
    );
    if !debt.is_empty() {
        let most: Vec<(f64, f64)> = debt.iter().map(|d| (d.t_s, d.generations_max as f64)).collect();
        let total: Vec<(f64, f64)> = debt.iter().map(|d| (d.t_s, d.generations_total as f64)).collect();
        panel(
            &mut svg,
            MARGIN_TOP + 2.0 * (PANEL_HEIGHT + PANEL_GAP),
            t_max,
            "compaction debt, flush generations",
            &[("#8e44ad", "most in a partition", &most), ("#d35400", "all partitions", &total)],
        );
        let bytes: Vec<(f64, f64)> = debt.iter().map(|d| (d.t_s, d.bytes_waiting as f64)).collect();
        panel(
            &mut svg,
            MARGIN_TOP + 3.0 * (PANEL_HEIGHT + PANEL_GAP),
            t_max,
            "bytes waiting for compaction",
            &[("#7f8c8d", "bytes", &bytes)],
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// One line of a panel: colour, legend name, (t, value) points.
type Series<'a> = (&'a str, &'a str, &'a [(f64, f64)]);

/// One panel: axes, three y ticks, three x ticks, one polyline per series, a legend.
fn panel(svg: &mut String, top: f64, t_max: f64, y_label: &str, series: &[Series<'_>]) {
    let left = MARGIN_LEFT;
    let right = WIDTH - MARGIN_RIGHT;
    let bottom = top + PANEL_HEIGHT;
    let y_max = series.iter().flat_map(|(_, _, s)| s.iter().map(|p| p.1)).fold(0.0, f64::max);
    let y_max = if y_max > 0.0 && y_max.is_finite() { y_max * 1.1 } else { 1.0 };
    let x = |t: f64| left + (right - left) * t / t_max;
    let y = |v: f64| bottom - PANEL_HEIGHT * v / y_max;
    let _ = write!(svg, r##"<path d="M{left} {top}V{bottom}H{right}" fill="none" stroke="#444"/>"##);
    for i in 0..=2 {
        let v = y_max * f64::from(i) / 2.0;
        let t = t_max * f64::from(i) / 2.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text><text x="{:.1}" y="{}" text-anchor="middle">{} s</text>"#,
            left - 6.0,
            y(v) + 4.0,
            si(v),
            x(t),
            bottom + 16.0,
            si(t)
        );
        let _ = write!(svg, r##"<path d="M{left} {:.1}H{right}" stroke="#ddd"/>"##, y(v));
    }
    let _ = write!(svg, r#"<text x="{left}" y="{}" >{}</text>"#, top - 8.0, escape(y_label));
    for (index, (color, name, points)) in series.iter().enumerate() {
        let mut line = String::new();
        for &(t, v) in points.iter() {
            if v.is_finite() {
                let _ = write!(line, "{:.1},{:.1} ", x(t), y(v));
            }
        }
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            line.trim_end()
        );
        let legend_x = right - 120.0 * (series.len() - index) as f64;
        let _ = write!(
            svg,
            r#"<rect x="{legend_x}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            top - 12.0,
            legend_x + 16.0,
            top - 8.0,
            escape(name)
        );
    }
}

/// `1234567.0` → `1.23M`.
fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Text escaped for XML content and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t_s: f64, readings_per_s: f64, p99_ms: f64) -> TimelinePoint {
        TimelinePoint {
            t_s,
            readings_per_s,
            batches_per_s: readings_per_s / 1e3,
            errors: 0,
            p50_ms: p99_ms / 2.0,
            p99_ms,
        }
    }

    #[test]
    fn a_sampled_debt_adds_its_two_panels() {
        let points: Vec<_> = (1..=4).map(|i| point(f64::from(i), 1e6, 5.0)).collect();
        let debt: Vec<DebtPoint> = (1..=6u32)
            .map(|i| DebtPoint {
                t_s: f64::from(i),
                generations_max: u64::from(i),
                generations_total: 2 * u64::from(i),
                bytes_waiting: 1 << 20,
                ..DebtPoint::default()
            })
            .collect();
        let svg = render_svg("debt", &points, &debt);
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert!(
            svg.contains("compaction debt, flush generations")
                && svg.contains("bytes waiting for compaction")
        );
        let coords: Vec<usize> =
            svg.split("points=\"").skip(1).map(|p| p[..p.find('"').unwrap()].split(' ').count()).collect();
        assert_eq!(coords, [4, 4, 4, 6, 6, 6]);
    }

    #[test]
    fn one_vertex_per_point_and_series_and_escaped_text() {
        let points: Vec<_> = (1..=10).map(|i| point(f64::from(i), 1e6 * f64::from(i), 5.0)).collect();
        let svg = render_svg("ingest <1,000 buoys> & \"durable\"", &points, &[]);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        for polyline in svg.split("points=\"").skip(1) {
            let coords = &polyline[..polyline.find('"').unwrap()];
            assert_eq!(coords.split(' ').count(), 10, "{coords}");
        }
        assert!(svg.contains("ingest &lt;1,000 buoys&gt; &amp; &quot;durable&quot;"));
        assert!(!svg.contains("<script") && !svg.contains("href"));
        assert!(svg.contains(">11.00M<"), "y axis top is 110% of the peak");
    }

    #[test]
    fn empty_and_non_finite_input_still_renders() {
        let svg = render_svg("empty", &[], &[]);
        assert_eq!(svg.matches("<polyline").count(), 3);
        let svg = render_svg("nan", &[point(1.0, f64::NAN, f64::INFINITY)], &[]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn si_units() {
        assert_eq!(
            [si(0.0), si(2.5), si(950.0), si(12_345.0), si(3_100_000.0), si(2e9)],
            ["0", "2.50", "950", "12.3k", "3.10M", "2.00G"]
        );
    }
}
