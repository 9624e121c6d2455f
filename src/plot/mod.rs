//! Chart building blocks on `plotters`' bitmap backend, with text drawn by `ab_glyph` from the
//! Liberation Sans font the repository ships (`assets/fonts/`, SIL OFL 1.1), so charts render
//! the same on every machine, with or without fontconfig.

use std::path::Path;
use std::sync::Once;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

pub mod svg;

/// The font family every chart uses.
pub const FONT: &str = "sans-serif";

pub(crate) static FONT_BYTES: &[u8] =
    include_bytes!("../../assets/fonts/LiberationSans-Regular.ttf");
static REGISTER: Once = Once::new();

/// Colour of an interval entirely above zero.
pub const ABOVE: RGBColor = RGBColor(31, 119, 180);
/// Colour of an interval entirely below zero.
pub const BELOW: RGBColor = RGBColor(214, 39, 40);
/// Colour of an interval that contains zero.
pub const NEUTRAL: RGBColor = RGBColor(120, 120, 120);

/// A drawing area of a PNG.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// An estimate with its interval, one row or point of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Row or bin label.
    pub label: String,
    /// Point estimate.
    pub estimate: f64,
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Interval {
    fn color(&self) -> RGBColor {
        if self.lo > 0.0 {
            ABOVE
        } else if self.hi < 0.0 {
            BELOW
        } else {
            NEUTRAL
        }
    }
}

pub(crate) fn register_font() {
    REGISTER.call_once(|| {
        // The bytes are compiled in and known to parse (tested), so failure cannot happen
        // at run time; if it did, plotters would report the missing font when drawing.
        if plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_err() {
            tracing::error!("the embedded chart font does not parse");
        }
    });
}

pub(crate) fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing chart: {e}")
}

/// Draws a `width × height` PNG at `path`: `draw` gets the whole white canvas.
pub fn png(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    draw(&root)?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))
}

/// Escapes text for HTML/SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A chart that draws on any `plotters` backend, so one drawing gives both PNG and SVG.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws on the whole (white) canvas.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()>;
}

/// `stem` with `.ext` appended (a stem may itself contain dots).
fn with_ext(stem: &Path, ext: &str) -> std::path::PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(ext);
    s.into()
}

/// Writes `fig` to `stem.png` and `stem.svg`. Each is written under a temporary name and
/// renamed, so a browser refreshing the report never shows half a chart.
pub fn png_and_svg(fig: &impl Figure, stem: &Path) -> anyhow::Result<()> {
    register_font();
    let size = fig.size();
    let (png_tmp, svg_tmp) = (with_ext(stem, ".tmp.png"), with_ext(stem, ".tmp.svg"));
    {
        let root = BitMapBackend::new(&png_tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        fig.draw(&root)?;
        root.present()
            .map_err(|e| anyhow!("writing {}: {e}", png_tmp.display()))?;
    }
    {
        let root = svg::SvgBackend::new(svg_tmp.clone(), size)?.into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        fig.draw(&root)?;
        root.present()
            .map_err(|e| anyhow!("writing {}: {e}", svg_tmp.display()))?;
    }
    for (tmp, ext) in [(png_tmp, ".png"), (svg_tmp, ".svg")] {
        let dest = with_ext(stem, ext);
        std::fs::rename(&tmp, &dest)
            .map_err(|e| anyhow!("renaming {} to {}: {e}", tmp.display(), dest.display()))?;
    }
    Ok(())
}

/// Finite span of the intervals (and zero), padded by 5%.
fn span(rows: &[Interval]) -> (f64, f64) {
    let vals = rows
        .iter()
        .flat_map(|r| [r.estimate, r.lo, r.hi])
        .filter(|v| v.is_finite())
        .chain([0.0]);
    let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// Caps an interval's non-finite ends to its estimate, so a missing interval draws as a point.
fn ends(r: &Interval) -> (f64, f64) {
    let f = |v: f64| if v.is_finite() { v } else { r.estimate };
    (f(r.lo), f(r.hi))
}

// Segmented axes over `0..n - 1` give exactly one segment per row or bin.

/// A forest plot: one labeled row per interval, top to bottom, with a line at zero.
/// Rows whose interval excludes zero are coloured by side ([`ABOVE`], [`BELOW`]).
pub fn forest(area: &Area, title: &str, x_desc: &str, rows: &[Interval]) -> anyhow::Result<()> {
    let n = rows.len().max(1) as i32;
    let (x0, x1) = span(rows);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(170)
        .build_cartesian_2d(x0..x1, (0..n - 1).into_segmented())
        .map_err(plot_err)?;
    let label_of = |v: &SegmentValue<i32>| match v {
        // Row 0 is drawn at the top.
        SegmentValue::CenterOf(i) => rows
            .get((n - 1 - i) as usize)
            .map(|r| r.label.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&label_of)
        .x_desc(x_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .disable_y_mesh()
        .light_line_style(WHITE)
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, SegmentValue::Exact(0)), (0.0, SegmentValue::Exact(n))],
            BLACK.stroke_width(1),
        )))
        .map_err(plot_err)?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let (lo, hi) = ends(r);
            let y = SegmentValue::CenterOf(n - 1 - i as i32);
            ErrorBar::new_horizontal(y, lo, r.estimate, hi, r.color().filled().stroke_width(2), 8)
        }))
        .map_err(plot_err)?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            Circle::new(
                (r.estimate, SegmentValue::CenterOf(n - 1 - i as i32)),
                4,
                r.color().filled(),
            )
        }))
        .map_err(plot_err)?;
    Ok(())
}

/// A curve over ordered bins: points with interval bars joined by a line, and a line at zero.
pub fn binned_curve(
    area: &Area,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    bins: &[Interval],
) -> anyhow::Result<()> {
    let n = bins.len().max(1) as i32;
    let (y0, y1) = span(bins);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n - 1).into_segmented(), y0..y1)
        .map_err(plot_err)?;
    let label_of = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => bins
            .get(*i as usize)
            .map(|b| b.label.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .x_labels(bins.len())
        .x_label_formatter(&label_of)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .disable_x_mesh()
        .light_line_style(WHITE)
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(SegmentValue::Exact(0), 0.0), (SegmentValue::Exact(n), 0.0)],
            BLACK.stroke_width(1),
        )))
        .map_err(plot_err)?;
    chart
        .draw_series(LineSeries::new(
            bins.iter()
                .enumerate()
                .filter(|(_, b)| b.estimate.is_finite())
                .map(|(i, b)| (SegmentValue::CenterOf(i as i32), b.estimate)),
            NEUTRAL.mix(0.6).stroke_width(2),
        ))
        .map_err(plot_err)?;
    chart
        .draw_series(bins.iter().enumerate().map(|(i, b)| {
            let (lo, hi) = ends(b);
            ErrorBar::new_vertical(
                SegmentValue::CenterOf(i as i32),
                lo,
                b.estimate,
                hi,
                b.color().filled().stroke_width(2),
                10,
            )
        }))
        .map_err(plot_err)?;
    Ok(())
}

/// Writes `text` lines in the area, for panels with nothing to plot.
pub fn note(area: &Area, title: &str, text: &str) -> anyhow::Result<()> {
    area.draw(&Text::new(title.to_owned(), (20, 20), (FONT, 22)))
        .map_err(plot_err)?;
    area.draw(&Text::new(text.to_owned(), (20, 60), (FONT, 16)))
        .map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_font_parses() {
        assert!(plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    }
}
