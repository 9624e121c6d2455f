//! `index.html`: every chart, the latest value per run × filter, and the alert list, in one
//! static file that works offline.

use std::fmt::Write as _;

use super::{Planned, Section};
use crate::analysis::curves::Curve;
use crate::analysis::detection::{Detection, LEGEND};
use crate::analysis::recall::RecallRow;
use crate::plot::escape;
use crate::store::alerts::AlertRow;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}small{color:#666}
.charts{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}img{width:480px;border:1px solid #ddd}
tr.acked{color:#999}p.note{color:#555;font-size:90%;max-width:60em}";

fn value(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "–".into()
    }
}

/// The latest checkpoint's value of each run on each filter of one evalset.
fn latest_table(out: &mut String, curves: &[&Curve], filters: &[&str]) -> std::fmt::Result {
    let mut runs: Vec<&str> = curves.iter().map(|c| c.run.as_str()).collect();
    runs.sort_unstable();
    runs.dedup();
    out.push_str("<table><tr><th class=l>run</th><th class=l>arch</th><th class=l>latest checkpoint</th><th>tokens</th>");
    for f in filters {
        write!(out, "<th>{}</th>", escape(f))?;
    }
    out.push_str("</tr>\n");
    for run in runs {
        let of_run: Vec<&&Curve> = curves.iter().filter(|c| c.run == run).collect();
        let last = of_run
            .iter()
            .filter_map(|c| c.points.last())
            .max_by_key(|p| (p.tokens, p.step));
        let Some(last) = last else { continue };
        let arch = of_run.first().map_or("", |c| c.arch.as_str());
        write!(
            out,
            "<tr><td class=l>{}</td><td class=l>{}</td><td class=l>{}{}</td><td>{}</td>",
            escape(run),
            escape(arch),
            escape(&last.name),
            if last.anneal { " (annealed)" } else { "" },
            last.tokens
        )?;
        for f in filters {
            let p = of_run
                .iter()
                .find(|c| c.filter == *f)
                .and_then(|c| c.points.iter().find(|p| p.checkpoint == last.checkpoint));
            match p {
                Some(p) => write!(
                    out,
                    "<td>{}<br><small>[{}, {}]</small></td>",
                    value(p.mean),
                    value(p.ci_lo),
                    value(p.ci_hi)
                )?,
                None => out.push_str("<td>–</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    Ok(())
}

fn alert_table(out: &mut String, alerts: &[AlertRow]) -> std::fmt::Result {
    let open = alerts.iter().filter(|a| a.acked_at.is_none()).count();
    writeln!(
        out,
        "<h2>Alerts ({} open, {} in all)</h2>",
        open,
        alerts.len()
    )?;
    if alerts.is_empty() {
        out.push_str("<p>No alert has fired.</p>\n");
        return Ok(());
    }
    out.push_str("<table><tr><th>id</th><th class=l>fired</th><th class=l>rule</th><th class=l>run</th><th class=l>filter</th><th class=l>checkpoint</th><th>value</th><th>threshold</th><th class=l>message</th><th class=l>acknowledged</th></tr>\n");
    for a in alerts {
        let f = &a.firing;
        writeln!(
            out,
            "<tr{}><td>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td class=l>{}</td><td class=l>{}</td></tr>",
            if a.acked_at.is_some() { " class=acked" } else { "" },
            a.id,
            escape(&a.fired_at),
            escape(&f.rule),
            escape(&f.run),
            escape(&f.filter),
            escape(&f.checkpoint),
            value(f.value),
            value(f.threshold),
            escape(&f.message),
            escape(a.acked_at.as_deref().unwrap_or("no"))
        )?;
    }
    out.push_str("</table>\n");
    Ok(())
}

/// One evalset's detection table, sorted by lead within each run and kind.
fn detection_table(out: &mut String, detections: &[&Detection]) -> std::fmt::Result {
    if detections.is_empty() {
        return Ok(());
    }
    out.push_str(
        "<h3>Detection of a regression against the baseline</h3>\n<table><tr><th>run</th><th>baseline</th>\
         <th>kind</th><th>filter</th><th>first detected (tokens)</th><th>lead over all</th><th>checkpoints</th></tr>\n",
    );
    for d in detections {
        let filter = if d.primary {
            format!("<b>{}</b> (primary)", escape(&d.filter))
        } else {
            escape(&d.filter)
        };
        writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{filter}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&d.run),
            escape(&d.baseline),
            if d.anneal { "anneal" } else { "stable" },
            escape(&d.first_detected_cell()),
            escape(&d.lead_cell()),
            d.checkpoints
        )?;
    }
    writeln!(
        out,
        "</table>\n<p class=note>{}</p>",
        escape(LEGEND.trim_end())
    )
}

fn figure(out: &mut String, stem: &str, caption: &str) -> std::fmt::Result {
    let (s, c) = (escape(stem), escape(caption));
    writeln!(
        out,
        "<figure><a href=\"{s}.svg\"><img src=\"{s}.png\" alt=\"{c}\"></a><figcaption>{c} · <a href=\"{s}.svg\">SVG</a></figcaption></figure>"
    )
}

/// The whole page. `curves` are every stored curve; `charts` what the chart files are.
pub fn index(
    curves: &[Curve],
    charts: &[Planned],
    alerts: &[AlertRow],
    detections: &[Detection],
    generated: &str,
    x_desc: &str,
) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    write!(
        out,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"60\">\
         <title>filtermon report</title><style>{STYLE}</style></head><body>\n\
         <h1>filtermon report</h1>\n<p>Generated {} · x axis: {} · click a chart for its SVG.</p>\n",
        escape(generated),
        escape(x_desc)
    )?;
    alert_table(&mut out, alerts)?;
    let mut evalsets: Vec<(i64, &str)> = curves
        .iter()
        .map(|c| (c.evalset_id, c.evalset.as_str()))
        .collect();
    evalsets.dedup();
    if evalsets.is_empty() {
        out.push_str("<p>No results stored yet.</p>\n");
    }
    for (id, name) in evalsets {
        let of_es: Vec<&Curve> = curves.iter().filter(|c| c.evalset_id == id).collect();
        let mut filters: Vec<&str> = Vec::new();
        for c in &of_es {
            if !filters.contains(&c.filter.as_str()) && RecallRow::parse(&c.filter).is_none() {
                filters.push(&c.filter);
            }
        }
        let of_section = |section: Section| {
            charts
                .iter()
                .filter(move |c| c.evalset_id == id && c.section == section)
        };
        writeln!(
            out,
            "<h2>Evalset {}</h2>\n<h3>Latest values (mean NLL, nats, with 95% CI)</h3>",
            escape(name)
        )?;
        latest_table(&mut out, &of_es, &filters)?;
        let of_es_detections: Vec<&Detection> =
            detections.iter().filter(|d| d.evalset_id == id).collect();
        detection_table(&mut out, &of_es_detections)?;
        out.push_str("<h3>Curves</h3>\n");
        for f in &filters {
            out.push_str("<div class=charts>\n");
            for c in of_section(Section::Filter).filter(|c| c.filter == *f) {
                figure(&mut out, &c.stem, &c.caption)?;
            }
            out.push_str("</div>\n");
        }
        if of_section(Section::Recall).next().is_some() {
            out.push_str("<h3>Recall diagnostics</h3>\n<div class=charts>\n");
            for c in of_section(Section::Recall) {
                figure(&mut out, &c.stem, &c.caption)?;
            }
            out.push_str("</div>\n");
        }
        if of_section(Section::RecallOverTraining).next().is_some() {
            out.push_str(
                "<details><summary>Recall rows over training</summary>\n<div class=charts>\n",
            );
            for c in of_section(Section::RecallOverTraining) {
                figure(&mut out, &c.stem, &c.caption)?;
            }
            out.push_str("</div></details>\n");
        }
    }
    out.push_str("</body></html>\n");
    Ok(out)
}
