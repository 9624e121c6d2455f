//! The categories a token falls in, for per-category reports (`token_category_map.csv`,
//! `compare`): UPOS and PTB tags, content / function, brackets, `repeat_len` and
//! `copy_distance` bins, word-initial or not, domain, and named filters.

use serde::Serialize;

use crate::evalset::filter::Filter;
use crate::evalset::labels::TokenLabels;
use crate::evalset::tagset::{Upos, PTB_TAGS};

/// `repeat_len` bins as inclusive `(lo, hi, label)`; 16+ runs to the cap of 255.
pub const REPEAT_BINS: [(u32, u32, &str); 8] = [
    (0, 0, "0"),
    (1, 1, "1"),
    (2, 2, "2"),
    (3, 3, "3"),
    (4, 4, "4"),
    (5, 7, "5-7"),
    (8, 15, "8-15"),
    (16, u32::MAX, "16+"),
];

/// `copy_distance` bins (tokens that repeat something, `repeat_len ≥ 1`), in powers of four
/// so that windows of a few hundred to 8k tokens each get a handful of bins.
pub const COPY_BINS: [(u32, u32, &str); 7] = [
    (1, 3, "1-3"),
    (4, 15, "4-15"),
    (16, 63, "16-63"),
    (64, 255, "64-255"),
    (256, 1023, "256-1023"),
    (1024, 4095, "1024-4095"),
    (4096, u32::MAX, "4096+"),
];

/// Index of the bin of `bins` holding `v`.
pub fn bin_of(bins: &[(u32, u32, &str)], v: u32) -> Option<usize> {
    bins.iter().position(|&(lo, hi, _)| lo <= v && v <= hi)
}

/// What a category groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Universal POS tag.
    Upos,
    /// PTB tag.
    Tag,
    /// `content` or `function`.
    Class,
    /// `open` or `close` bracket.
    Bracket,
    /// A [`REPEAT_BINS`] bin.
    RepeatLen,
    /// A [`COPY_BINS`] bin.
    CopyDistance,
    /// `yes` or `no`.
    WordInitial,
    /// Document domain.
    Domain,
    /// A named filter.
    Filter,
}

impl Kind {
    /// The spelling in category names (`kind=value`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Upos => "upos",
            Kind::Tag => "tag",
            Kind::Class => "class",
            Kind::Bracket => "bracket",
            Kind::RepeatLen => "repeat_len",
            Kind::CopyDistance => "copy_distance",
            Kind::WordInitial => "word_initial",
            Kind::Domain => "domain",
            Kind::Filter => "filter",
        }
    }
}

/// One category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Category {
    /// What it groups by.
    pub kind: Kind,
    /// The value within that kind, e.g. `NOUN`, `5-7`, `python`.
    pub value: String,
}

impl Category {
    /// `kind=value`, e.g. `upos=NOUN`.
    pub fn name(&self) -> String {
        format!("{}={}", self.kind.name(), self.value)
    }
}

/// Every category of an evalset in a fixed order, and which of them a token is in.
pub struct CategorySet {
    categories: Vec<Category>,
    filters: Vec<Filter>,
    offsets: Offsets,
}

#[derive(Default)]
struct Offsets {
    upos: usize,
    tag: usize,
    class: usize,
    bracket: usize,
    repeat: usize,
    copy: usize,
    word_initial: usize,
    domain: usize,
    filter: usize,
}

impl CategorySet {
    /// The categories of an evalset with these domains, plus one per filter.
    pub fn new(domains: &[String], filters: &[Filter]) -> Self {
        let mut categories = Vec::new();
        let mut offsets = Offsets::default();
        let mut add = |kind: Kind, values: Vec<String>| {
            let at = categories.len();
            categories.extend(values.into_iter().map(|value| Category { kind, value }));
            at
        };
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        offsets.upos = add(
            Kind::Upos,
            Upos::ALL.iter().map(|u| u.name().into()).collect(),
        );
        offsets.tag = add(Kind::Tag, owned(&PTB_TAGS));
        offsets.class = add(Kind::Class, owned(&["content", "function"]));
        offsets.bracket = add(Kind::Bracket, owned(&["open", "close"]));
        offsets.repeat = add(
            Kind::RepeatLen,
            REPEAT_BINS.iter().map(|b| b.2.into()).collect(),
        );
        offsets.copy = add(
            Kind::CopyDistance,
            COPY_BINS.iter().map(|b| b.2.into()).collect(),
        );
        offsets.word_initial = add(Kind::WordInitial, owned(&["yes", "no"]));
        offsets.domain = add(Kind::Domain, domains.to_vec());
        offsets.filter = add(
            Kind::Filter,
            filters.iter().map(|f| f.name().to_owned()).collect(),
        );
        Self {
            categories,
            filters: filters.to_vec(),
            offsets,
        }
    }

    /// All categories; a member index from [`CategorySet::members`] indexes this.
    pub fn categories(&self) -> &[Category] {
        &self.categories
    }

    /// The filter behind a `Kind::Filter` category, by category index.
    pub fn filter(&self, category: usize) -> Option<&Filter> {
        category
            .checked_sub(self.offsets.filter)
            .and_then(|i| self.filters.get(i))
    }

    /// Replaces `out` with the indices of the categories `l` is in.
    pub fn members(&self, l: &TokenLabels, out: &mut Vec<usize>) {
        let o = &self.offsets;
        out.clear();
        out.push(o.upos + l.upos as usize);
        if (l.tag as usize) < PTB_TAGS.len() {
            out.push(o.tag + l.tag as usize);
        }
        if l.content() {
            out.push(o.class);
        }
        if l.function() {
            out.push(o.class + 1);
        }
        if l.open_bracket {
            out.push(o.bracket);
        }
        if l.close_bracket {
            out.push(o.bracket + 1);
        }
        if let Some(b) = bin_of(&REPEAT_BINS, u32::from(l.repeat_len)) {
            out.push(o.repeat + b);
        }
        if l.repeat_len > 0 {
            if let Some(b) = bin_of(&COPY_BINS, l.copy_distance) {
                out.push(o.copy + b);
            }
        }
        out.push(o.word_initial + usize::from(!l.word_initial));
        if usize::from(l.domain) < o.filter - o.domain {
            out.push(o.domain + usize::from(l.domain));
        }
        for (i, f) in self.filters.iter().enumerate() {
            if f.matches(l) {
                out.push(o.filter + i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evalset::filter::compile_filters;

    fn label() -> TokenLabels {
        TokenLabels {
            tag: 11, // NN
            upos: Upos::Noun,
            open_bracket: false,
            close_bracket: true,
            repeat_len: 6,
            copy_distance: 40,
            log_freq: 1.0,
            word_initial: true,
            pos: 3,
            domain: 1,
            probe: None,
        }
    }

    #[test]
    fn a_token_is_in_each_of_its_categories_once() {
        let domains = vec!["prose".to_string(), "python".to_string()];
        let filters = compile_filters(&[], &domains).expect("filters");
        let set = CategorySet::new(&domains, &filters);
        let mut m = Vec::new();
        set.members(&label(), &mut m);
        let names: Vec<String> = m.iter().map(|&i| set.categories()[i].name()).collect();
        for want in [
            "upos=NOUN",
            "tag=NN",
            "class=content",
            "bracket=close",
            "repeat_len=5-7",
            "copy_distance=16-63",
            "word_initial=yes",
            "domain=python",
            "filter=all",
            "filter=copy5",
            "filter=close_bracket",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing in {names:?}"
            );
        }
        for absent in ["filter=content_nocopy", "bracket=open", "class=function"] {
            assert!(!names.iter().any(|n| n == absent), "{absent} in {names:?}");
        }
        assert_eq!(
            set.filter(m[m.len() - 1]).map(Filter::name),
            Some("close_bracket")
        );
    }

    #[test]
    fn bins_cover_every_value() {
        for v in 0..=255u32 {
            assert!(bin_of(&REPEAT_BINS, v).is_some());
        }
        for v in [1, 3, 4, 4095, 4096, u32::MAX] {
            assert!(bin_of(&COPY_BINS, v).is_some());
        }
        assert_eq!(bin_of(&COPY_BINS, 0), None);
    }
}
