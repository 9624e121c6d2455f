//! Charts of the stored curves and the static HTML report: per evalset and filter, every
//! run's loss over training and every run's gap to its baseline, as PNG and SVG, plus
//! `index.html`. `filtermon chart` draws them on demand; `watch` redraws them as results come in.

pub mod html;
pub mod lines;
pub mod recall;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;
use plotters::style::RGBColor;

use crate::analysis::curves::{gap, Curve, Point};
use crate::analysis::detection::{detections, Detection};
use crate::analysis::recall::RecallRow;
use crate::analysis::stats::paired::PairedDiff;
use crate::error::input_error;
use crate::plot::png_and_svg;
use crate::store::paired_gaps::GapKey;
use crate::store::report::rfc3339;
use crate::store::{now, Store};
use lines::{LineChart, Series, SeriesPoint};

/// What the x axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum XAxis {
    /// Tokens seen.
    #[default]
    Tokens,
    /// Training step.
    Step,
}

/// How charts are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChartOptions {
    /// The x axis.
    pub x: XAxis,
    /// Logarithmic x axis.
    pub log_x: bool,
}

impl ChartOptions {
    fn x_desc(&self) -> &'static str {
        match self.x {
            XAxis::Tokens => "tokens seen",
            XAxis::Step => "step",
        }
    }
}

/// Where a chart goes in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// A filter's loss or gap over training.
    Filter,
    /// A recall snapshot (by gap, copy distance or repeat length).
    Recall,
    /// One recall row over training.
    RecallOverTraining,
}

/// One chart file pair (`stem.png`, `stem.svg`) of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Evalset id.
    pub evalset_id: i64,
    /// Filter.
    pub filter: String,
    /// Path relative to the report folder, without extension.
    pub stem: String,
    /// Caption in the report.
    pub caption: String,
    /// Report section.
    pub section: Section,
    /// What to draw.
    pub chart: LineChart,
}

/// Colours by architecture, so one architecture looks the same in every chart: the usual
/// three get fixed colours, other labels the rest of the palette in name order.
const PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn fixed_colour(arch: &str) -> Option<usize> {
    match arch.to_ascii_lowercase().as_str() {
        "transformer" | "attention" => Some(0),
        "hybrid" => Some(1),
        "rnn" | "gdn" | "recurrent" | "linear" => Some(2),
        _ => None,
    }
}

/// A colour per run: its architecture's, darker or lighter for a second or third run of the
/// same architecture.
pub fn run_colours(curves: &[Curve]) -> HashMap<String, RGBColor> {
    let mut runs: Vec<(&str, &str)> = curves
        .iter()
        .map(|c| (c.arch.as_str(), c.run.as_str()))
        .collect();
    runs.sort_unstable();
    runs.dedup();
    let mut others: Vec<&str> = runs
        .iter()
        .map(|(a, _)| *a)
        .filter(|a| fixed_colour(a).is_none())
        .collect();
    others.dedup();
    let mut out = HashMap::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (arch, run) in runs {
        let slot = fixed_colour(arch)
            .or_else(|| others.iter().position(|a| *a == arch).map(|i| 3 + i))
            .unwrap_or(0)
            % PALETTE.len();
        let k = seen.entry(arch).or_default();
        let RGBColor(r, g, b) = PALETTE[slot];
        let shade = |c: u8| match *k % 3 {
            0 => c,
            1 => (f64::from(c) * 0.6) as u8,
            _ => (f64::from(c) + (255.0 - f64::from(c)) * 0.45) as u8,
        };
        out.insert(run.to_owned(), RGBColor(shade(r), shade(g), shade(b)));
        *k += 1;
    }
    out
}

/// File-name form of a filter or evalset name.
fn file_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Every chart of the report, in report order. `paired` holds the paired gaps the store
/// has, drawn as the gap charts' intervals where a point has one.
pub fn plan(
    curves: &[Curve],
    paired: &HashMap<GapKey, PairedDiff>,
    detections: &[Detection],
    opts: &ChartOptions,
) -> Vec<Planned> {
    let colours = run_colours(curves);
    let x_of = |p: &Point| match opts.x {
        XAxis::Tokens => p.tokens as f64,
        XAxis::Step => p.step as f64,
    };
    let names = evalset_folders(curves);
    let mut evalsets: Vec<i64> = curves.iter().map(|c| c.evalset_id).collect();
    evalsets.dedup();
    let longest_gain = longest_gains(curves);
    let mut groups: Vec<(i64, &str)> = Vec::new();
    for c in curves {
        if !groups.contains(&(c.evalset_id, c.filter.as_str())) {
            groups.push((c.evalset_id, &c.filter));
        }
    }
    let mut out = Vec::new();
    for (es, filter) in groups {
        let group: Vec<&Curve> = curves
            .iter()
            .filter(|c| c.evalset_id == es && c.filter == filter)
            .collect();
        // A filter no token of the evalset passes (content words on a probe) has no chart.
        if !group
            .iter()
            .flat_map(|c| &c.points)
            .any(|p| p.mean.is_finite())
        {
            continue;
        }
        let evalset = &group[0].evalset;
        let colour = |run: &str| colours.get(run).copied().unwrap_or(PALETTE[0]);
        let series = group
            .iter()
            .map(|c| Series {
                label: format!("{} ({})", c.run, c.arch),
                color: colour(&c.run),
                points: c
                    .points
                    .iter()
                    .map(|p| SeriesPoint {
                        x: x_of(p),
                        y: p.mean,
                        lo: p.ci_lo,
                        hi: p.ci_hi,
                        anneal: p.anneal,
                    })
                    .collect(),
                detected: Vec::new(),
            })
            .collect();
        let stem = format!("{}/{}", names[&es], file_name(filter));
        let row = RecallRow::parse(filter);
        let recall = row.is_some();
        // The longest gap's retrieval gain over training sits with the snapshots: it is where
        // a recurrent model's recall gives out first.
        let headline = longest_gain.get(&es).is_some_and(|g| *g == filter);
        out.push(Planned {
            evalset_id: es,
            filter: filter.to_owned(),
            stem: stem.clone(),
            caption: if recall {
                format!("{filter} over training")
            } else {
                format!("{filter}: loss")
            },
            section: match (recall, headline) {
                (false, _) => Section::Filter,
                (true, true) => Section::Recall,
                (true, false) => Section::RecallOverTraining,
            },
            chart: LineChart {
                title: format!("{filter} — {evalset}"),
                x_desc: opts.x_desc().into(),
                y_desc: row
                    .as_ref()
                    .map_or("mean NLL (nats)", recall::y_desc)
                    .into(),
                log_x: opts.log_x,
                zero_line: false,
                x_labels: Vec::new(),
                over_training: true,
                series,
            },
        });
        if recall {
            // The recall snapshots below show these rows' gaps to the baseline.
            continue;
        }
        let gaps = gap_series(&group, paired, detections, &x_of, &colour);
        if !gaps.is_empty() {
            out.push(Planned {
                evalset_id: es,
                filter: filter.to_owned(),
                stem: format!("{stem}-gap"),
                caption: format!("{filter}: gap to baseline"),
                section: Section::Filter,
                chart: LineChart {
                    title: format!("{filter} — {evalset}: run − baseline at matched tokens"),
                    x_desc: opts.x_desc().into(),
                    y_desc: "Δ mean NLL (nats)".into(),
                    log_x: opts.log_x,
                    zero_line: true,
                    x_labels: Vec::new(),
                    over_training: true,
                    series: gaps,
                },
            });
        }
    }
    for es in evalsets {
        let of_es: Vec<&Curve> = curves.iter().filter(|c| c.evalset_id == es).collect();
        out.extend(recall::plan(
            &of_es,
            paired,
            &colours,
            &names[&es],
            &of_es[0].evalset,
        ));
    }
    out
}

/// Each run's gap to its baseline in `group` (one evalset and filter), with its paired
/// interval and a marker at its first sustained detection of each kind.
fn gap_series(
    group: &[&Curve],
    paired: &HashMap<GapKey, PairedDiff>,
    detections: &[Detection],
    x_of: &dyn Fn(&Point) -> f64,
    colour: &dyn Fn(&str) -> RGBColor,
) -> Vec<Series> {
    group
        .iter()
        .filter_map(|c| {
            let base = group.iter().find(|b| Some(&b.run) == c.baseline.as_ref())?;
            let points: Vec<SeriesPoint> = gap(c, base)
                .into_iter()
                .map(|(p, g)| {
                    let (lo, hi) = interval(paired, &p, c);
                    SeriesPoint {
                        x: x_of(&p),
                        y: g,
                        lo,
                        hi,
                        anneal: p.anneal,
                    }
                })
                .collect();
            // The first sustained detection of each kind, at its checkpoint.
            let detected = detections
                .iter()
                .filter(|d| d.run == c.run && d.evalset_id == c.evalset_id && d.filter == c.filter)
                .filter_map(|d| {
                    let t = d.first_detected?;
                    let p = c
                        .points
                        .iter()
                        .find(|p| p.tokens == t && p.anneal == d.anneal)?;
                    Some(x_of(p))
                })
                .collect();
            (!points.is_empty()).then(|| Series {
                label: format!("{} − {}", c.run, base.run),
                color: colour(&c.run),
                points,
                detected,
            })
        })
        .collect()
}

/// Each evalset's folder in the report: its name, with its id where two share a name.
fn evalset_folders(curves: &[Curve]) -> HashMap<i64, String> {
    let mut names: HashMap<i64, String> = HashMap::new();
    for c in curves {
        if !names.contains_key(&c.evalset_id) {
            let taken = names.values().any(|n| *n == file_name(&c.evalset));
            let name = if taken {
                format!("{}-{}", file_name(&c.evalset), c.evalset_id)
            } else {
                file_name(&c.evalset)
            };
            names.insert(c.evalset_id, name);
        }
    }
    names
}

/// Each evalset's retrieval-gain row at its longest gap.
fn longest_gains(curves: &[Curve]) -> HashMap<i64, &str> {
    let mut longest: HashMap<i64, &str> = HashMap::new();
    for c in curves {
        let gap = |name: &str| match RecallRow::parse(name) {
            Some(RecallRow::Gain(g)) => Some(g),
            _ => None,
        };
        if let Some(g) = gap(&c.filter) {
            let best = longest.entry(c.evalset_id).or_insert(&c.filter);
            if gap(best).is_none_or(|b| g > b) {
                *best = &c.filter;
            }
        }
    }
    longest
}

/// The paired interval of the gap at `p` on `c`'s evalset and filter; NaN where none is
/// stored (the baseline has no checkpoint of the same kind at the same tokens).
fn interval(paired: &HashMap<GapKey, PairedDiff>, p: &Point, c: &Curve) -> (f64, f64) {
    paired
        .get(&(p.checkpoint, c.evalset_id, c.filter.clone()))
        .map_or((f64::NAN, f64::NAN), |d| (d.lo, d.hi))
}

/// Draws the report into `out`: every chart of `evalsets` (all when `None`) and
/// `index.html` (which always lists every chart). Returns the index's path.
pub fn render(
    store: &Store,
    out: &Path,
    opts: &ChartOptions,
    evalsets: Option<&[i64]>,
) -> anyhow::Result<PathBuf> {
    let curves = store.curves(None)?;
    let paired = store.paired_gaps()?;
    let detections = detections(&curves, &paired, &store.primary_filters()?);
    let charts = plan(&curves, &paired, &detections, opts);
    std::fs::create_dir_all(out)
        .map_err(|e| input_error(format!("{}: cannot create folder: {e}", out.display())))?;
    for c in charts
        .iter()
        .filter(|c| evalsets.is_none_or(|e| e.contains(&c.evalset_id)))
    {
        let stem = out.join(&c.stem);
        if let Some(dir) = stem.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create folder", dir.display()))?;
        }
        png_and_svg(&c.chart, &stem).with_context(|| format!("chart {}", c.stem))?;
    }
    let page = html::index(
        &curves,
        &charts,
        &store.alerts()?,
        &detections,
        &rfc3339(now()),
        opts.x_desc(),
    )?;
    let index = out.join("index.html");
    let tmp = out.join(".index.html.tmp");
    std::fs::write(&tmp, page).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &index).with_context(|| format!("writing {}", index.display()))?;
    Ok(index)
}
