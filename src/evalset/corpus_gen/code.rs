//! Python-like code: functions and classes that reuse their identifiers, calls nested inside
//! lists, dicts and subscripts, comments and docstrings.

use super::{capitalize, Pick};
use rand::rngs::StdRng;
use rand::Rng;

const NOUNS: &[&str] = &[
    "record", "item", "row", "value", "node", "token", "batch", "entry", "score", "window",
    "sample", "path",
];
const VERBS: &[&str] = &[
    "load", "parse", "merge", "count", "filter", "update", "render", "score", "split", "build",
];
const CONTAINERS: &[&str] = &[
    "items", "rows", "values", "nodes", "tokens", "entries", "samples",
];

/// One module of `functions` functions (and sometimes a class).
pub fn document(rng: &mut StdRng, functions: usize) -> String {
    let mut out = String::from("import os\nimport math\nfrom collections import defaultdict\n\n");
    if rng.random_bool(0.5) {
        out.push_str(&class(rng));
    }
    for _ in 0..functions {
        out.push_str(&function(rng));
    }
    out
}

fn function(rng: &mut StdRng) -> String {
    let verb = rng.pick(VERBS);
    let noun = rng.pick(NOUNS);
    let xs = rng.pick(CONTAINERS);
    let name = format!("{verb}_{noun}s");
    let limit = rng.random_range(2..64);
    let mut f = format!(
        "def {name}({xs}, limit={limit}):\n    \"\"\"{} every {noun} in `{xs}`, at most `limit`.\"\"\"\n",
        capitalize(verb)
    );
    f.push_str(&format!(
        "    result = []\n    seen = defaultdict(int)\n    for i, {noun} in enumerate({xs}):\n"
    ));
    f.push_str(&format!(
        "        if i >= limit:\n            break\n        seen[{noun}] += 1\n"
    ));
    match rng.random_range(0..4) {
        0 => f.push_str(&format!(
            "        result.append(({noun}, math.sqrt(abs(seen[{noun}]))))\n"
        )),
        1 => f.push_str(&format!(
            "        result.append({{\"{noun}\": {noun}, \"count\": [seen[{noun}], len({xs})]}})\n"
        )),
        2 => f.push_str(&format!(
            "        # keep the {noun} only when its key is new\n        if seen[{noun}] == 1:\n            result.append(str({noun}).strip())\n"
        )),
        _ => f.push_str(&format!(
            "        result.append(max(min({noun}, limit), -limit) if isinstance({noun}, int) else {noun})\n"
        )),
    }
    f.push_str(&format!(
        "    return result\n\n\nprint({name}([{}]))\n\n\n",
        numbers(rng)
    ));
    f
}

fn class(rng: &mut StdRng) -> String {
    let noun = rng.pick(NOUNS);
    let cls = capitalize(noun);
    format!(
        "class {cls}Index:\n    \"\"\"Counts of {noun}s by key.\"\"\"\n\n    def __init__(self, {noun}s):\n        self.{noun}s = list({noun}s)\n        self.counts = {{}}\n\n    def add(self, {noun}):\n        self.counts[{noun}] = self.counts.get({noun}, 0) + 1\n        return self.counts[{noun}]\n\n    def top(self, k=3):\n        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]\n\n\n"
    )
}

fn numbers(rng: &mut StdRng) -> String {
    let n = rng.random_range(2..7);
    (0..n)
        .map(|_| rng.random_range(0..100).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
