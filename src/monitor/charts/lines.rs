//! Line charts: one series per run, stable checkpoints joined by a line with a CI band,
//! annealed checkpoints as triangles with CI bars. Loss and gap curves over training are
//! drawn with it, and so are the recall snapshots (x = gap, copy distance or repeat length,
//! every point of one checkpoint).

use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::plot::{plot_err, Figure, FONT};

/// One checkpoint on a series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// Tokens seen or step.
    pub x: f64,
    /// Value.
    pub y: f64,
    /// Lower end of its interval (NaN: none).
    pub lo: f64,
    /// Upper end (NaN: none).
    pub hi: f64,
    /// Annealed checkpoint.
    pub anneal: bool,
}

/// One run's series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Colour (the run's architecture's).
    pub color: RGBColor,
    /// Points by increasing x.
    pub points: Vec<SeriesPoint>,
    /// Where the series' regression was first detected (x positions): a dashed vertical line
    /// each.
    pub detected: Vec<f64>,
}

/// A chart of series over training.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// Caption.
    pub title: String,
    /// X axis description.
    pub x_desc: String,
    /// Y axis description.
    pub y_desc: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Draw a line at y = 0 (gap charts).
    pub zero_line: bool,
    /// Names of the x positions 0, 1, … for a categorical axis; empty: numeric x.
    pub x_labels: Vec<String>,
    /// Points are checkpoints over training (legend explains stable and annealed markers);
    /// `false` for snapshots of one checkpoint.
    pub over_training: bool,
    /// The series.
    pub series: Vec<Series>,
}

/// `1234567` → `1.2M`: tick labels for token counts.
pub fn human(v: f64) -> String {
    let a = v.abs();
    let (div, unit) = match a {
        a if a >= 1e12 => (1e12, "T"),
        a if a >= 1e9 => (1e9, "B"),
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let x = v / div;
    if unit.is_empty() {
        format!("{}", x.round())
    } else if (x - x.round()).abs() < 0.05 {
        format!("{}{unit}", x.round())
    } else {
        format!("{x:.1}{unit}")
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// `(lo, hi)` of the finite values, padded; `None` when there are none.
fn padded(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    if log {
        let f = if hi > lo { (hi / lo).powf(0.04) } else { 1.5 };
        Some((lo / f, hi * f))
    } else {
        let pad = if hi > lo {
            (hi - lo) * 0.05
        } else {
            lo.abs().max(1.0) * 0.1
        };
        Some((lo - pad, hi + pad))
    }
}

impl LineChart {
    fn x_label(&self, v: f64) -> String {
        if self.x_labels.is_empty() {
            return human(v);
        }
        let i = v.round();
        if (v - i).abs() > 1e-6 || i < 0.0 {
            return String::new();
        }
        self.x_labels.get(i as usize).cloned().unwrap_or_default()
    }

    fn points(&self) -> impl Iterator<Item = &SeriesPoint> {
        self.series.iter().flat_map(|s| &s.points)
    }

    fn body<'a, DB, X>(
        &self,
        chart: &mut ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
        (x0, x1): (f64, f64),
        (y0, y1): (f64, f64),
    ) -> anyhow::Result<()>
    where
        DB: DrawingBackend + 'a,
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        chart
            .configure_mesh()
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .x_label_formatter(&|v| self.x_label(*v))
            .x_labels(if self.x_labels.is_empty() {
                10
            } else {
                self.x_labels.len()
            })
            .y_label_formatter(&|v| tick(*v, y1 - y0))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(plot_err)?;
        if self.zero_line {
            chart
                .draw_series(LineSeries::new(
                    [(x0, 0.0), (x1, 0.0)],
                    BLACK.stroke_width(1),
                ))
                .map_err(plot_err)?;
        }
        for s in &self.series {
            let stable: Vec<&SeriesPoint> = s.points.iter().filter(|p| !p.anneal).collect();
            let annealed: Vec<&SeriesPoint> = s.points.iter().filter(|p| p.anneal).collect();
            // A run scored only at annealed checkpoints gets its line through those.
            let main = if stable.is_empty() {
                &annealed
            } else {
                &stable
            };
            let banded: Vec<&&SeriesPoint> = main
                .iter()
                .filter(|p| p.y.is_finite() && p.lo.is_finite() && p.hi.is_finite())
                .collect();
            if banded.len() >= 2 {
                let band = banded
                    .iter()
                    .map(|p| (p.x, p.hi))
                    .chain(banded.iter().rev().map(|p| (p.x, p.lo)))
                    .collect::<Vec<_>>();
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        band,
                        s.color.mix(0.15).filled(),
                    )))
                    .map_err(plot_err)?;
            }
            let color = s.color;
            for &x in &s.detected {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(x, y0), (x, y1)],
                        6,
                        4,
                        color.stroke_width(2),
                    ))
                    .map_err(plot_err)?;
            }
            chart
                .draw_series(LineSeries::new(
                    main.iter().filter_map(|p| Some((p.x, finite(p.y)?))),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?;
            chart
                .draw_series(
                    stable
                        .iter()
                        .filter_map(|p| Some(Circle::new((p.x, finite(p.y)?), 3, color.filled()))),
                )
                .map_err(plot_err)?;
            if !stable.is_empty() && annealed.len() >= 2 {
                chart
                    .draw_series(LineSeries::new(
                        annealed.iter().filter_map(|p| Some((p.x, finite(p.y)?))),
                        color.mix(0.45).stroke_width(1),
                    ))
                    .map_err(plot_err)?;
            }
            chart
                .draw_series(annealed.iter().filter_map(|p| {
                    let (lo, hi) = (finite(p.lo)?, finite(p.hi)?);
                    Some(ErrorBar::new_vertical(
                        p.x,
                        lo,
                        finite(p.y)?,
                        hi,
                        color.stroke_width(1),
                        6,
                    ))
                }))
                .map_err(plot_err)?;
            chart
                .draw_series(annealed.iter().filter_map(|p| {
                    Some(TriangleMarker::new((p.x, finite(p.y)?), 7, color.filled()))
                }))
                .map_err(plot_err)?;
        }
        Ok(())
    }
}

/// Width of the legend panel right of the plot.
const LEGEND_WIDTH: u32 = 250;

/// A y tick label with as many decimals as the axis span needs, and never `-0`.
fn tick(v: f64, span: f64) -> String {
    // Ticks are about a tenth of the span apart.
    let decimals = (-(span.abs().max(1e-12) / 10.0).log10().floor()).clamp(0.0, 8.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_owned()
    } else {
        s
    }
}

impl LineChart {
    fn legend<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let grey = RGBColor(90, 90, 90);
        let mut y = 64;
        let text = |area: &DrawingArea<DB, Shift>, label: &str, y: i32| {
            area.draw(&Text::new(label.to_owned(), (40, y - 8), (FONT, 14)))
                .map_err(plot_err)
        };
        for s in &self.series {
            area.draw(&PathElement::new(
                vec![(10, y), (32, y)],
                s.color.stroke_width(3),
            ))
            .map_err(plot_err)?;
            text(area, &s.label, y)?;
            y += 24;
        }
        if !self.over_training {
            return Ok(());
        }
        y += 8;
        area.draw(&Circle::new((21, y), 3, grey.filled()))
            .map_err(plot_err)?;
        text(area, "stable checkpoint", y)?;
        if self.points().any(|p| p.anneal) {
            y += 24;
            area.draw(&TriangleMarker::new((21, y), 7, grey.filled()))
                .map_err(plot_err)?;
            let with_ci = self.points().any(|p| p.anneal && p.lo.is_finite());
            text(
                area,
                if with_ci {
                    "annealed (95% CI)"
                } else {
                    "annealed checkpoint"
                },
                y,
            )?;
        }
        Ok(())
    }
}

impl Figure for LineChart {
    fn size(&self) -> (u32, u32) {
        (960, 600)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let xs = padded(self.points().map(|p| p.x), self.log_x);
        let ys = padded(
            self.points()
                .flat_map(|p| [p.y, p.lo, p.hi])
                .chain(self.zero_line.then_some(0.0)),
            false,
        );
        let (Some(x), Some(y)) = (xs, ys) else {
            root.draw(&Text::new(self.title.clone(), (20, 20), (FONT, 22)))
                .map_err(plot_err)?;
            root.draw(&Text::new("no data yet", (20, 60), (FONT, 16)))
                .map_err(plot_err)?;
            return Ok(());
        };
        // The legend gets its own panel so it never hides a curve.
        let (plot, legend) = root.split_horizontally(self.size().0 - LEGEND_WIDTH);
        let mut builder = ChartBuilder::on(&plot);
        builder
            .caption(self.title.as_str(), (FONT, 22))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(72);
        if self.log_x {
            let mut chart = builder
                .build_cartesian_2d((x.0..x.1).log_scale(), y.0..y.1)
                .map_err(plot_err)?;
            self.body(&mut chart, x, y)?;
        } else {
            let mut chart = builder
                .build_cartesian_2d(x.0..x.1, y.0..y.1)
                .map_err(plot_err)?;
            self.body(&mut chart, x, y)?;
        }
        self.legend(&legend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_read_like_people_write_them() {
        assert_eq!(human(0.0), "0");
        assert_eq!(human(950.0), "950");
        assert_eq!(human(12_000.0), "12k");
        assert_eq!(human(1_250_000.0), "1.2M");
        assert_eq!(human(3e9), "3B");
    }

    #[test]
    fn ticks_have_enough_decimals_and_no_negative_zero() {
        assert_eq!(tick(-0.0000001, 0.5), "0.00");
        assert_eq!(tick(2.25, 0.5), "2.25");
        assert_eq!(tick(2.5, 5.0), "2.5");
        assert_eq!(tick(-0.1, 0.5), "-0.10");
    }

    #[test]
    fn spans_are_padded_and_skip_non_finite_values() {
        assert_eq!(padded([f64::NAN].into_iter(), false), None);
        let (lo, hi) = padded([1.0, 3.0, f64::NAN].into_iter(), false).expect("span");
        assert!(lo < 1.0 && hi > 3.0);
        let (lo, hi) = padded([0.0, 100.0, 1000.0].into_iter(), true).expect("log span");
        assert!(
            lo > 0.0 && lo < 100.0 && hi > 1000.0,
            "zero is left out on a log axis"
        );
    }
}
