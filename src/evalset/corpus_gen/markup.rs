//! HTML and LaTeX: nested elements and environments around generated prose, nested braces in
//! formulas.

use super::{capitalize, prose, Pick};
use rand::rngs::StdRng;
use rand::Rng;

const SECTIONS: &[&str] = &[
    "results",
    "methods",
    "background",
    "discussion",
    "data",
    "evaluation",
    "notes",
];
const CLASSES: &[&str] = &["card", "note", "summary", "item", "warning", "detail"];

/// An HTML page of `sections` sections, elements nested up to four deep.
pub fn html(rng: &mut StdRng, sections: usize) -> String {
    let title = capitalize(rng.pick(SECTIONS));
    let mut out = format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    for _ in 0..sections {
        let class = rng.pick(CLASSES);
        out.push_str(&format!(
            "<div class=\"{class}\">\n<h2>{}</h2>\n<p>{}</p>\n",
            capitalize(rng.pick(SECTIONS)),
            prose::paragraph(rng)
        ));
        match rng.random_range(0..3) {
            0 => {
                out.push_str("<ul>\n");
                for _ in 0..rng.random_range(2..5) {
                    out.push_str(&format!(
                        "<li><a href=\"#{}\">{}</a> <em>({})</em></li>\n",
                        rng.pick(SECTIONS),
                        prose::paragraph(rng),
                        rng.random_range(1..99)
                    ));
                }
                out.push_str("</ul>\n");
            }
            1 => {
                out.push_str("<table>\n<tr><th>name</th><th>value</th></tr>\n");
                for _ in 0..rng.random_range(2..5) {
                    out.push_str(&format!(
                        "<tr><td>{}</td><td><span class=\"{}\">{}</span></td></tr>\n",
                        rng.pick(SECTIONS),
                        rng.pick(CLASSES),
                        rng.random_range(0..1000)
                    ));
                }
                out.push_str("</table>\n");
            }
            _ => out.push_str(&format!(
                "<p><strong>{}</strong> {}</p>\n",
                capitalize(rng.pick(CLASSES)),
                prose::paragraph(rng)
            )),
        }
        out.push_str("</div>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// A LaTeX article of `sections` sections with equations, lists and tables.
pub fn latex(rng: &mut StdRng, sections: usize) -> String {
    let mut out =
        String::from("\\documentclass{article}\n\\usepackage{amsmath}\n\\begin{document}\n");
    for _ in 0..sections {
        out.push_str(&format!(
            "\\section{{{}}}\n{}\n",
            capitalize(rng.pick(SECTIONS)),
            prose::paragraph(rng)
        ));
        match rng.random_range(0..3) {
            0 => out.push_str(&format!(
                "\\begin{{equation}}\n  {} = \\frac{{{}}}{{\\sqrt{{{} + {}}}}}\n\\end{{equation}}\n",
                symbol(rng),
                term(rng),
                term(rng),
                term(rng)
            )),
            1 => {
                out.push_str("\\begin{itemize}\n");
                for _ in 0..rng.random_range(2..5) {
                    out.push_str(&format!(
                        "  \\item {} (see \\ref{{sec:{}}})\n",
                        prose::paragraph(rng),
                        rng.pick(SECTIONS)
                    ));
                }
                out.push_str("\\end{itemize}\n");
            }
            _ => {
                out.push_str("\\begin{table}[h]\n\\begin{tabular}{lr}\n");
                for _ in 0..rng.random_range(2..5) {
                    out.push_str(&format!(
                        "  {} & ${}$ \\\\\n",
                        rng.pick(SECTIONS),
                        term(rng)
                    ));
                }
                out.push_str("\\end{tabular}\n\\end{table}\n");
            }
        }
    }
    out.push_str("\\end{document}\n");
    out
}

fn symbol(rng: &mut StdRng) -> &'static str {
    rng.pick(&["x", "y", "\\alpha", "\\beta", "L", "f(x)", "\\theta_{t}"])
}

/// A formula term with nested braces and brackets.
fn term(rng: &mut StdRng) -> String {
    let (a, b) = (symbol(rng), symbol(rng));
    match rng.random_range(0..4) {
        0 => format!("{a}^{{2}}"),
        1 => format!("\\left( {a} + {b} \\right)"),
        2 => format!("\\sum_{{i=1}}^{{n}} {a}_{{i}}"),
        _ => format!("\\log\\left[ {a} \\cdot {{{b}}} \\right]"),
    }
}
