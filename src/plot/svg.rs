//! A `plotters` backend that writes SVG with text drawn as glyph outlines from the embedded
//! font, placed exactly where the bitmap backend puts its glyphs. `plotters`' own SVG backend
//! writes `<text>` elements, which a viewer renders with whatever font it has; outlines make
//! an SVG look the same everywhere, like the PNG.

use std::fmt::Write as _;
use std::path::PathBuf;

use ab_glyph::{Font, FontRef, OutlineCurve, ScaleFont};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::FontTransform;
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

type Result<T> = std::result::Result<T, DrawingErrorKind<std::io::Error>>;

/// SVG written to `path` on `present`.
pub struct SvgBackend {
    path: PathBuf,
    size: (u32, u32),
    font: FontRef<'static>,
    body: String,
}

impl SvgBackend {
    /// A `width × height` drawing to be written to `path`.
    pub fn new(path: PathBuf, size: (u32, u32)) -> anyhow::Result<SvgBackend> {
        let font = FontRef::try_from_slice(super::FONT_BYTES)
            .map_err(|e| anyhow::anyhow!("the embedded chart font does not parse: {e}"))?;
        Ok(SvgBackend {
            path,
            size,
            font,
            body: String::new(),
        })
    }
}

fn paint(c: BackendColor) -> String {
    let (r, g, b) = c.rgb;
    format!("rgb({r},{g},{b})")
}

fn stroke(style: &impl BackendStyle) -> String {
    let c = style.color();
    format!(
        r#"fill="none" stroke="{}" stroke-opacity="{:.3}" stroke-width="{}""#,
        paint(c),
        c.alpha,
        style.stroke_width().max(1)
    )
}

fn fill(c: BackendColor) -> String {
    format!(r#"fill="{}" fill-opacity="{:.3}""#, paint(c), c.alpha)
}

fn points(path: impl IntoIterator<Item = BackendCoord>) -> String {
    let mut s = String::new();
    for (x, y) in path {
        let _ = write!(s, "{x},{y} ");
    }
    s.trim_end().to_owned()
}

impl SvgBackend {
    /// Appends one element, unless its colour is fully transparent.
    fn element(&mut self, color: BackendColor, element: std::fmt::Arguments) -> Result<()> {
        if color.alpha > 0.0 {
            let _ = writeln!(self.body, "{element}");
        }
        Ok(())
    }
}

impl DrawingBackend for SvgBackend {
    type ErrorType = std::io::Error;

    fn get_size(&self) -> (u32, u32) {
        self.size
    }

    fn ensure_prepared(&mut self) -> Result<()> {
        Ok(())
    }

    fn present(&mut self) -> Result<()> {
        let (w, h) = self.size;
        let doc = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\">\n{}</svg>\n",
            self.body
        );
        std::fs::write(&self.path, doc).map_err(DrawingErrorKind::DrawingError)
    }

    fn draw_pixel(&mut self, (x, y): BackendCoord, color: BackendColor) -> Result<()> {
        self.element(
            color,
            format_args!(
                r#"<rect x="{x}" y="{y}" width="1" height="1" {}/>"#,
                fill(color)
            ),
        )
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        (x1, y1): BackendCoord,
        (x2, y2): BackendCoord,
        style: &S,
    ) -> Result<()> {
        self.element(
            style.color(),
            format_args!(
                r#"<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" {}/>"#,
                stroke(style)
            ),
        )
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        (x0, y0): BackendCoord,
        (x1, y1): BackendCoord,
        style: &S,
        filled: bool,
    ) -> Result<()> {
        let paint = if filled {
            fill(style.color())
        } else {
            stroke(style)
        };
        self.element(
            style.color(),
            format_args!(
                r#"<rect x="{}" y="{}" width="{}" height="{}" {paint}/>"#,
                x0.min(x1),
                y0.min(y1),
                (x1 - x0).abs(),
                (y1 - y0).abs()
            ),
        )
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<()> {
        self.element(
            style.color(),
            format_args!(
                r#"<polyline points="{}" {} stroke-linejoin="round"/>"#,
                points(path),
                stroke(style)
            ),
        )
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        (x, y): BackendCoord,
        radius: u32,
        style: &S,
        filled: bool,
    ) -> Result<()> {
        if style.color().alpha > 0.0 {
            let paint = if filled {
                fill(style.color())
            } else {
                stroke(style)
            };
            let _ = writeln!(
                self.body,
                r#"<circle cx="{x}" cy="{y}" r="{radius}" {paint}/>"#
            );
        }
        Ok(())
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<()> {
        self.element(
            style.color(),
            format_args!(
                r#"<polygon points="{}" {}/>"#,
                points(vert),
                fill(style.color())
            ),
        )
    }

    fn draw_text<T: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &T,
        (x, y): BackendCoord,
    ) -> Result<()> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        // The same layout box and anchoring as the bitmap backend's default `draw_text`.
        let ((min_x, min_y), (max_x, max_y)) = style
            .layout_box(text)
            .map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (w, h) = (max_x - min_x, max_y - min_y);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Right => -w,
            HPos::Center => -w / 2,
        } - min_x;
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        } - min_y;
        let degrees = match style.transform() {
            FontTransform::None => 0,
            FontTransform::Rotate90 => 90,
            FontTransform::Rotate180 => 180,
            FontTransform::Rotate270 => -90,
        };
        let d = glyph_path(&self.font, style.size() as f32, text);
        // The label keeps the text searchable and readable by screen readers.
        let _ = writeln!(
            self.body,
            r#"<path aria-label="{}" transform="translate({x} {y}) rotate({degrees}) translate({dx} {dy})" d="{d}" {}/>"#,
            super::escape(text),
            fill(color)
        );
        Ok(())
    }
}

/// Outlines of `text` at `size` px, laid out as `plotters`' ab_glyph text: kerned advances,
/// each glyph's pixel box starting at the whole-pixel pen position, baseline at `size / 2`.
fn glyph_path(font: &FontRef<'static>, size: f32, text: &str) -> String {
    let scaled = font.as_scaled(size);
    let (hs, vs) = (scaled.h_scale_factor(), scaled.v_scale_factor());
    let baseline = (size / 2.0).trunc();
    let mut d = String::new();
    let mut pen = 0f32;
    let mut prev = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            pen += scaled.kern(p, id);
        }
        prev = Some(id);
        if let Some(outline) = font.outline(id) {
            let left = (outline.bounds.min.x * hs).floor();
            let ox = pen.trunc() - left;
            let at = |p: ab_glyph::Point| (ox + p.x * hs, baseline - p.y * vs);
            let mut last: Option<(f32, f32)> = None;
            for curve in &outline.curves {
                let (start, rest) = match curve {
                    OutlineCurve::Line(a, b) => (*a, vec![*b]),
                    OutlineCurve::Quad(a, b, c) => (*a, vec![*b, *c]),
                    OutlineCurve::Cubic(a, b, c, e) => (*a, vec![*b, *c, *e]),
                };
                let s = at(start);
                if last != Some(s) {
                    let _ = write!(d, "M{:.2} {:.2}", s.0, s.1);
                }
                let cmd = ["", "L", "Q", "C"][rest.len()];
                d.push_str(cmd);
                for p in &rest {
                    let q = at(*p);
                    let _ = write!(d, "{:.2} {:.2} ", q.0, q.1);
                }
                last = rest.last().map(|p| at(*p));
            }
        }
        pen += scaled.h_advance(id);
    }
    d.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::prelude::*;

    #[test]
    fn writes_shapes_and_outlined_text() {
        super::super::register_font();
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.svg");
        {
            let root = SvgBackend::new(path.clone(), (200, 100))
                .expect("backend")
                .into_drawing_area();
            root.fill(&WHITE).expect("fill");
            root.draw(&Text::new("Ag", (10, 10), (super::super::FONT, 20)))
                .expect("text");
            root.draw(&PathElement::new(vec![(0, 0), (50, 50)], RED))
                .expect("line");
            root.present().expect("present");
        }
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(r#"width="200" height="100""#));
        assert!(!svg.contains("<text"), "text is drawn as outlines");
        let text = svg
            .lines()
            .find(|l| l.starts_with("<path"))
            .expect("glyph path");
        // Two glyphs, each a closed outline with curves: "A" and "g" (with its counter).
        assert!(text.matches('M').count() >= 3, "{text}");
        assert!(text.contains('Q') || text.contains('C'));
        assert!(text.contains(r#"aria-label="Ag""#));
        assert!(svg.contains(r#"points="0,0 50,50""#));
    }
}
