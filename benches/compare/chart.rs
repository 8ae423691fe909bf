//! The chart of `BENCHMARKS.md` (`docs/benchmarks.svg`): for every workload that has peers,
//! how much better each gaio backend does than the best peer, as horizontal bars on a log
//! scale around parity (1). Drawn with `plotters` (SVG backend only).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One workload: its label and each gaio backend's advantage over the best peer (above 1:
/// gaio better, whatever the metric's direction), `None` where not measured.
pub struct Row {
    pub label: String,
    pub values: [Option<f64>; 2],
}

const SERIES: [(&str, RGBColor); 2] = [
    ("gaio-epoll", RGBColor(0x1f, 0x77, 0xb4)),
    ("gaio-uring", RGBColor(0xff, 0x7f, 0x0e)),
];
const ROW_PX: u32 = 30;
const WIDTH: u32 = 1100;
const LABELS_PX: u32 = 420;

/// Row index and value of series `k` wherever it has one a log scale can show.
fn measured(rows: &[Row], k: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
    rows.iter().enumerate().filter_map(move |(i, r)| {
        r.values[k]
            .filter(|v| v.is_finite() && *v > 0.0)
            .map(|v| (i, v))
    })
}

/// Tick marks at 1, 2 and 5 times the powers of ten within `lo..=hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    (-3..=3)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
        .filter(|t| (lo..=hi).contains(t))
        .collect()
}

pub fn draw(path: &Path, title: &str, rows: &[Row]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let err = |e: DrawingAreaErrorKind<_>| format!("chart {}: {e}", path.display());
    let n = rows.len().max(1);
    let height = 130 + ROW_PX * n as u32;
    let all: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.values.iter().flatten().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(0.5f64, f64::min).max(1e-3) * 0.8;
    let hi = all.iter().copied().fold(2.0f64, f64::max).min(1e3) * 1.25;

    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(LABELS_PX)
        .build_cartesian_2d(
            (lo..hi).log_scale().with_key_points(ticks(lo, hi)),
            0f64..n as f64,
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc("gaio ÷ best peer, log scale (above 1: gaio better; for lower-is-better metrics, best peer ÷ gaio)")
        .x_label_formatter(&|x| format!("{x}"))
        .draw()
        .map_err(err)?;

    // Row i (from the top) spans y in [n-i-1, n-i]; its bars take the middle 70%.
    let span = |i: usize, k: usize| {
        let top = (n - i) as f64 - 0.15;
        let h = 0.35;
        (top - h * (k as f64 + 1.0), top - h * k as f64)
    };
    for (k, (name, color)) in SERIES.iter().enumerate() {
        let bars: Vec<Rectangle<(f64, f64)>> = measured(rows, k)
            .map(|(i, v)| {
                let (y0, y1) = span(i, k);
                let v = v.clamp(lo, hi);
                Rectangle::new([(v.min(1.0), y1), (v.max(1.0), y0)], color.filled())
            })
            .collect();
        let color = *color;
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        // The figure at the end of each bar.
        let figures: Vec<Text<(f64, f64), String>> = measured(rows, k)
            .map(|(i, v)| {
                let (y0, y1) = span(i, k);
                let at = v.clamp(lo, hi);
                let (x, h) = if v >= 1.0 {
                    (at * 1.02, HPos::Left)
                } else {
                    (at / 1.02, HPos::Right)
                };
                let style = ("sans-serif", 11)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(h, VPos::Center));
                Text::new(format!("{v:.2}"), (x, (y0 + y1) / 2.0), style)
            })
            .collect();
        chart.draw_series(figures).map_err(err)?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, 0.0), (1.0, n as f64)],
            BLACK.stroke_width(1),
        )))
        .map_err(err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    // Row labels, right-aligned against the plot's left edge.
    let label_style = ("sans-serif", 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    for (i, r) in rows.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(lo, (n - i) as f64 - 0.5));
        root.draw(&Text::new(
            r.label.clone(),
            (px - 8, py),
            label_style.clone(),
        ))
        .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
