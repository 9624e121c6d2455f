//! The stages import one way (see `src/lib.rs`): a module may use its own stage, the stages
//! before it and the shared foundation, never a later stage; and inside a stage no two
//! modules import each other, directly or around a longer circle.
//!
//! Read from the `crate::` paths of every source file (comments aside), so that a circle fails
//! this test the moment it comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The stages in data-flow order; the foundation comes first and imports only itself.
const STAGES: &[&[&str]] = &[
    &["error", "progress", "plot"],
    &["evalset"],
    &["engine"],
    &["analysis"],
    &["store"],
    &["monitor"],
    &["demo"],
    &["commands"],
];

fn rank(top: &str) -> Option<usize> {
    STAGES.iter().position(|s| s.contains(&top))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("src entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(stage, module)` of a source file: `src/engine/model/olmo3.rs` → `("engine", "model")`; a
/// stage's own `mod.rs` has module `""`.
fn node_of(rel: &Path) -> (String, String) {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    let module = match parts.get(1) {
        Some(m) if m != "mod" => m.clone(),
        _ => String::new(),
    };
    (parts[0].clone(), module)
}

/// The first two segments of every `crate::a::b` path in `code` (`crate::{a, b}` gives each `a`
/// with module `""`).
fn imports(code: &str) -> Vec<(String, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let top = ident(item.trim());
                if !top.is_empty() {
                    out.push((top, String::new()));
                }
            }
            continue;
        }
        let top = ident(rest);
        let module = rest[top.len()..]
            .strip_prefix("::")
            .map(ident)
            .unwrap_or_default();
        out.push((top, module));
    }
    out
}

/// A `(stage, module)` node.
type Node = (String, String);

/// Every import edge between `(stage, module)` nodes, with a file that makes it.
fn edges() -> BTreeMap<(Node, Node), PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src").to_path_buf();
        if rel == Path::new("lib.rs") || rel == Path::new("main.rs") {
            continue;
        }
        let from = node_of(&rel);
        let text = std::fs::read_to_string(&file).expect("source is readable");
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (top, module) in imports(&code) {
            // Macros exported at the crate root (`bail_input!`) belong to the foundation.
            let to = if rank(&top).is_some() {
                (top, module)
            } else {
                ("error".to_string(), String::new())
            };
            if to.0 != from.0 || to.1 != from.1 {
                edges.entry((from.clone(), to)).or_insert(rel.clone());
            }
        }
    }
    edges
}

#[test]
fn no_stage_imports_a_later_stage() {
    let mut wrong = Vec::new();
    for ((from, to), file) in edges() {
        let (Some(a), Some(b)) = (rank(&from.0), rank(&to.0)) else {
            wrong.push(format!("{}: unknown stage of `{}`", file.display(), to.0));
            continue;
        };
        if b > a {
            wrong.push(format!(
                "{} ({}) imports {}::{}",
                file.display(),
                from.0,
                to.0,
                to.1
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the stage order:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_circles_inside_a_stage() {
    // Sibling modules only: a stage's own mod.rs and its children use each other by design.
    let mut graph: BTreeMap<(String, String), BTreeSet<(String, String)>> = BTreeMap::new();
    // The foundation's modules count as siblings of one stage.
    let sibling = |(stage, module): (String, String)| match rank(&stage) {
        Some(0) => ("foundation".to_string(), stage),
        _ => (stage, module),
    };
    for ((from, to), _) in edges() {
        let (from, to) = (sibling(from), sibling(to));
        if from.0 == to.0 && !from.1.is_empty() && !to.1.is_empty() {
            graph.entry(from).or_default().insert(to);
        }
    }
    let mut circles = Vec::new();
    for start in graph.keys() {
        // Depth-first search for a path back to `start`.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> =
                        path.iter().map(|(s, m)| format!("{s}::{m}")).collect();
                    circles.push(format!("{} → {}::{}", names.join(" → "), start.0, start.1));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_reader_sees_through_comments_and_groups() {
    let code = "use crate::engine::model::X;\nlet y = crate::store::now();\nuse crate::{error, plot};\n$crate::error::input_error";
    let found = imports(code);
    let expect = [
        ("engine", "model"),
        ("store", "now"),
        ("error", ""),
        ("plot", ""),
    ];
    assert_eq!(
        found,
        expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
}
