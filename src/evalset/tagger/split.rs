//! Splits raw text into words the way UD English-EWT segments it, with byte offsets.
//!
//! Conventions followed (checked against the treebank):
//! - punctuation is split off; runs like `...`, `!!!`, `?!`, `--` stay one word;
//! - clitics are separate words: `n't 's 're 'll 've 'm 'd` (also with `’`), so
//!   `can't` → `ca n't`, `won't` → `wo n't`; `cannot`, `gonna`, `wanna`, `gotta`,
//!   `dont`, `im`, ... split like EWT's multiword tokens (`can not`, `gon na`, `do nt`);
//! - hyphenated compounds split into `word - word`, except after prefixes EWT keeps
//!   (`e-mail`, `non-human`, `re-read`, `mid-July`, ...) and phone-like digit groups;
//! - URLs, e-mail addresses, emoticons, numbers with `.`/`,`/`:` (`3.14`, `1,000`,
//!   `5:00`), dates like `11/28/2000`, and abbreviations (`Dr.`, `U.S.`, `e.g.`) stay whole.
//!
//! Every word is a non-empty byte range of the input; words are in order and disjoint.

/// A word's byte range `start..end` in the text it was split from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// Splits `text` into words (see the module docs for the conventions).
pub fn split_words(text: &str) -> Vec<Span> {
    let mut out = Vec::with_capacity(text.len() / 4 + 1);
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                // A chunk at the end of a line probably ends a sentence: EWT then splits
                // the period off an abbreviation (`the U.S .`).
                let rest = &text[i..];
                let line_end = rest
                    .find(|c: char| !c.is_whitespace())
                    .is_none_or(|k| rest[..k].contains('\n'));
                split_chunk(text, s, i, line_end, &mut out);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        split_chunk(text, s, text.len(), true, &mut out);
    }
    out
}

/// The words of `text` as string slices.
pub fn split_words_str(text: &str) -> Vec<&str> {
    split_words(text)
        .into_iter()
        .map(|s| &text[s.start..s.end])
        .collect()
}

/// Groups words into sentences, as index ranges into `words`.
///
/// A sentence ends after a word made of `.`, `!`, `?` or `…` (and any closing quotes or
/// brackets right after it), at a blank line, and at a single line break unless the next
/// line starts with a lowercase letter (hard-wrapped prose continues; code, lists and
/// headings do not).
pub fn split_sentences(text: &str, words: &[Span]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut begin = 0;
    let mut i = 0;
    while i < words.len() {
        let w = &text[words[i].start..words[i].end];
        let mut end_here = false;
        if is_final_punct(w) {
            // Closing quotes and brackets belong to the sentence they close.
            while i + 1 < words.len() && is_closer(&text[words[i + 1].start..words[i + 1].end]) {
                i += 1;
            }
            end_here = true;
        }
        if !end_here && i + 1 < words.len() {
            let gap = &text[words[i].end..words[i + 1].start];
            let newlines = gap.matches('\n').count();
            if newlines >= 2 {
                end_here = true;
            } else if newlines == 1 {
                let next = text[words[i + 1].start..].chars().next();
                end_here = !next.is_some_and(|c| c.is_lowercase());
            }
        }
        if end_here {
            out.push(begin..i + 1);
            begin = i + 1;
        }
        i += 1;
    }
    if begin < words.len() {
        out.push(begin..words.len());
    }
    out
}

fn is_closer_char(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | ')' | ']' | '}' | '>')
}

fn is_final_punct(w: &str) -> bool {
    !w.is_empty() && w.chars().all(|c| matches!(c, '.' | '!' | '?' | '…'))
}

fn is_closer(w: &str) -> bool {
    matches!(w, "\"" | "'" | "''" | "”" | "’" | ")" | "]" | "}")
}

// ---------------------------------------------------------------------------------------

const EMOTICONS: &[&str] = &[
    ":)", ":-)", ":(", ":-(", ";)", ";-)", ":D", ":-D", ":P", ":-P", ":p", "=)", "^_^", ":/", ":o",
    ":O", "<3", ":'(", "xD", "XD",
];

/// Lowercase words that keep a following hyphen attached (`e-mail`, `non-human`).
const HYPHEN_PREFIXES: &[&str] = &[
    "e", "non", "pre", "anti", "mid", "re", "post", "co", "over", "meh", "pro", "multi", "ex",
    "sub", "semi", "cross", "neo", "psycho", "socio", "counter", "intra", "micro", "un", "inter",
    "trans", "ultra", "mega", "mini", "macro", "pseudo", "quasi", "bi", "tri", "x", "de", "hyper",
    "super",
];

/// Words whose final `.` belongs to them (lowercase, without the period).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "jr", "sr", "st", "vs", "etc", "inc", "ltd", "co", "corp", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue",
    "tues", "wed", "thu", "thur", "thurs", "fri", "sat", "sun", "no", "ft", "rev", "gen", "lt",
    "col", "sgt", "capt", "prof", "gov", "sen", "rep", "mt", "approx", "dept", "est", "fig", "vol",
    "ave", "blvd", "e.g", "i.e", "a.m", "p.m", "u.s", "u.k", "u.n", "d.c", "p.s", "t.v", "ph.d",
    "cf", "al", "yahoo",
];

/// Abbreviations written with a slash, kept whole (`b/c`, `w/o`).
const SLASH_ABBREVIATIONS: &[&str] = &["b/c", "w/", "w/o", "a/c", "c/o", "n/a", "s/he"];

/// Apostrophe-less contractions that EWT splits, as (lowercase form, split position in bytes).
const BARE_CONTRACTIONS: &[(&str, usize)] = &[
    ("cannot", 3),
    ("gonna", 3),
    ("wanna", 3),
    ("gotta", 3),
    ("outta", 3),
    ("dont", 2),
    ("didnt", 3),
    ("doesnt", 4),
    ("cant", 2),
    ("wont", 2),
    ("couldnt", 5),
    ("wouldnt", 5),
    ("shouldnt", 6),
    ("isnt", 2),
    ("wasnt", 3),
    ("arent", 3),
    ("werent", 4),
    ("havent", 4),
    ("hasnt", 3),
    ("aint", 2),
    ("im", 1),
    ("ive", 1),
    ("youre", 3),
    ("theyre", 4),
    ("thats", 4),
    ("whats", 4),
    ("theres", 5),
];

/// A clitic written as its own chunk (`Bush 's`, `ca n't`).
fn is_clitic(w: &str) -> bool {
    let mut cs = w.chars();
    match cs.next() {
        Some(c) if is_apostrophe(c) => {
            matches!(
                cs.as_str().to_lowercase().as_str(),
                "s" | "re" | "ll" | "ve" | "m" | "d"
            )
        }
        _ => matches!(w.to_lowercase().as_str(), "n't" | "n’t"),
    }
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '’' | '`')
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || (!c.is_ascii() && is_mark(c))
}

fn is_mark(c: char) -> bool {
    // Combining diacritics (U+0300..U+036F) and variation selectors stay inside words.
    matches!(c as u32, 0x300..=0x36F | 0xFE00..=0xFE0F | 0x200D)
}

fn is_url_or_email(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if [
        "http://", "https://", "ftp://", "www.", "mailto:", "file://",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
    {
        return lower.len() > 7;
    }
    if let Some(at) = s.find('@') {
        let (user, domain) = (&s[..at], &s[at + 1..]);
        return !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_alphanumeric() || "._-+".contains(c))
            && domain.len() >= 2
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || ".-".contains(c))
            && domain.chars().next().is_some_and(|c| c.is_alphanumeric());
    }
    // Bare domains and file names (`enron.com`, `report.xls`) are one word in EWT.
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    {
        let last = parts[parts.len() - 1].to_ascii_lowercase();
        return matches!(
            last.as_str(),
            "com" | "org" | "net" | "edu" | "gov" | "uk" | "de" | "ca" | "doc" | "xls" | "pdf" | "txt"
                | "htm" | "html" | "ppt" | "zip" | "jpg" | "gif" | "png" | "exe" | "io" | "rs" | "py"
        ) && parts[0].chars().any(|c| c.is_alphabetic())
            // Dotted names like newsgroups (`alt.animals.cat`).
            || (parts.len() >= 3 && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_lowercase())));
    }
    false
}

fn push(out: &mut Vec<Span>, start: usize, end: usize) {
    if start < end {
        out.push(Span { start, end });
    }
}

/// Splits one whitespace-free chunk `text[s..e]`; `line_end`: nothing but whitespace
/// follows it on its line.
fn split_chunk(text: &str, s: usize, e: usize, line_end: bool, out: &mut Vec<Span>) {
    let chunk = &text[s..e];
    if EMOTICONS.contains(&chunk)
        || is_clitic(chunk)
        || SLASH_ABBREVIATIONS.contains(&chunk.to_lowercase().as_str())
    {
        push(out, s, e);
        return;
    }
    // Peel leading openers and trailing closers that never belong to a URL or address.
    let mut a = s;
    let mut b = e;
    let mut lead = Vec::new();
    while a < b {
        let c = text[a..b].chars().next().unwrap_or(' ');
        if matches!(c, '(' | '[' | '{' | '<' | '"' | '“' | '‘' | '\'' | '«') {
            lead.push((a, a + c.len_utf8()));
            a += c.len_utf8();
        } else {
            break;
        }
    }
    let mut trail = Vec::new();
    while a < b {
        let c = text[a..b].chars().next_back().unwrap_or(' ');
        let inner = &text[a..b];
        let peel = match c {
            '.' | ',' | ';' | ':' | '!' | '?' | '"' | '”' | '’' | '\'' | '>' | '»' => true,
            ')' => !inner.contains('('),
            ']' => !inner.contains('['),
            '}' => !inner.contains('{'),
            _ => false,
        };
        if peel {
            trail.push((b - c.len_utf8(), b));
            b -= c.len_utf8();
        } else {
            break;
        }
    }
    if a < b && is_url_or_email(&text[a..b]) {
        for (x, y) in lead {
            push(out, x, y);
        }
        push(out, a, b);
        // Trailing punctuation runs (`...`, `?!`) group like anywhere else.
        trail.reverse();
        if let (Some(first), Some(last)) = (trail.first(), trail.last()) {
            scan(text, first.0, last.1, line_end, out);
        }
        return;
    }
    scan(text, s, e, line_end, out);
}

/// The length of a URL or e-mail address starting at `t`, if one does.
fn url_at(t: &str) -> Option<usize> {
    let lower_head: String = t.chars().take(8).collect::<String>().to_ascii_lowercase();
    let trim = |mut end: usize| {
        while end > 0
            && matches!(
                t.as_bytes()[end - 1],
                b'.' | b',' | b';' | b':' | b'!' | b'?' | b'\'' | b'"'
            )
        {
            end -= 1;
        }
        end
    };
    if [
        "http://", "https://", "ftp://", "www.", "mailto:", "file://",
    ]
    .iter()
    .any(|p| lower_head.starts_with(p))
    {
        let mut depth = 0i32;
        let mut end = t.len();
        for (i, c) in t.char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = i;
                    break;
                }
                ')' => depth -= 1,
                '<' | '>' | '"' | '“' | '”' | ']' => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let end = trim(end);
        return (end > 7).then_some(end);
    }
    let user = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._%+-".contains(c)))
        .unwrap_or(t.len());
    if user == 0 || !t[user..].starts_with('@') {
        return None;
    }
    let d = &t[user + 1..];
    let dom = d
        .find(|c: char| !(c.is_ascii_alphanumeric() || ".-".contains(c)))
        .unwrap_or(d.len());
    let mut end = user + 1 + dom;
    while end > user + 1 && matches!(t.as_bytes()[end - 1], b'.' | b'-') {
        end -= 1;
    }
    (t[user + 1..end].contains('.') && t[..user].chars().any(|c| c.is_ascii_alphanumeric()))
        .then_some(end)
}

/// The general scanner: alternates word runs (with internal joiners) and punctuation runs.
fn scan(text: &str, s: usize, e: usize, line_end: bool, out: &mut Vec<Span>) {
    let chars: Vec<(usize, char)> = text[s..e].char_indices().map(|(i, c)| (s + i, c)).collect();
    let n = chars.len();
    let pos = |k: usize| if k < n { chars[k].0 } else { e };
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        if is_word_char(c)
            || (matches!(c, '#' | '@') && i == 0 && n > 1 && chars[1].1.is_alphabetic())
        {
            if let Some(len) = url_at(&text[pos(i)..e]) {
                let end = pos(i) + len;
                push(out, pos(i), end);
                while i < n && chars[i].0 < end {
                    i += 1;
                }
                continue;
            }
            let mut j = i + 1;
            loop {
                if j < n && is_word_char(chars[j].1) {
                    j += 1;
                } else if j + 1 < n && is_word_char(chars[j + 1].1) && joins(&chars, j) {
                    j += 2;
                } else {
                    break;
                }
            }
            // An abbreviation or initial keeps its final period.
            let final_period = line_end
                && chars[j.min(n - 1) + 1..]
                    .iter()
                    .all(|(_, c)| is_closer_char(*c));
            if j < n
                && chars[j].1 == '.'
                && !final_period
                && takes_period(
                    &text[pos(i)..pos(j)],
                    j + 1 == n || !chars[j + 1].1.is_alphanumeric(),
                )
            {
                j += 1;
            }
            split_word(text, pos(i), pos(j), out);
            i = j;
        } else {
            let mut j = i + 1;
            if c == '.' && j < n && chars[j].1 == '.' {
                // An ellipsis stays apart from a following `?` or `!` (`...?` → `... ?`).
                while j < n && chars[j].1 == '.' {
                    j += 1;
                }
            } else if matches!(c, '.' | '!' | '?') {
                while j < n && matches!(chars[j].1, '.' | '!' | '?') {
                    j += 1;
                }
            } else if is_apostrophe(c)
                && j < n
                && is_word_char(chars[j].1)
                && clitic_follows(text, &chars, j, e)
            {
                while j < n && chars[j].1.is_alphabetic() {
                    j += 1;
                }
            } else if matches!(
                c,
                '-' | '*' | '=' | '_' | '~' | '<' | '>' | '#' | '`' | '\'' | '$' | '/' | '\\' | '+'
            ) {
                while j < n && chars[j].1 == c {
                    j += 1;
                }
            }
            push(out, pos(i), pos(j));
            i = j;
        }
    }
}

/// Whether the letters from `chars[j]` on are a clitic (`'s` after `)` or a quote).
fn clitic_follows(text: &str, chars: &[(usize, char)], j: usize, e: usize) -> bool {
    let mut k = j;
    while k < chars.len() && chars[k].1.is_alphabetic() {
        k += 1;
    }
    let end = if k < chars.len() { chars[k].0 } else { e };
    matches!(
        text[chars[j].0..end].to_lowercase().as_str(),
        "s" | "re" | "ll" | "ve" | "m" | "d"
    )
}

/// Whether the non-word character at `chars[j]` joins the word characters around it.
fn joins(chars: &[(usize, char)], j: usize) -> bool {
    let prev = chars[j - 1].1;
    let next = chars[j + 1].1;
    match chars[j].1 {
        '.' => {
            (prev.is_ascii_digit() && next.is_ascii_digit())
                // U.S, e.g, a.m: single letters between dots.
                || (prev.is_alphabetic() && next.is_alphabetic() && single_letter_before(chars, j)
                    && (j + 2 >= chars.len() || chars[j + 2].1 == '.'))
        }
        ',' => {
            prev.is_ascii_digit()
                && chars.len() >= j + 4
                && chars[j + 1..j + 4].iter().all(|(_, c)| c.is_ascii_digit())
                && (j + 4 == chars.len() || !chars[j + 4].1.is_ascii_digit())
        }
        ':' | '/' => prev.is_ascii_digit() && next.is_ascii_digit(),
        '-' => true,
        '&' => prev.is_uppercase() && next.is_uppercase(),
        c if is_apostrophe(c) => prev.is_alphabetic() && next.is_alphabetic(),
        _ => false,
    }
}

fn single_letter_before(chars: &[(usize, char)], j: usize) -> bool {
    j == 1
        || !chars[j - 2].1.is_alphanumeric()
        || (j >= 3 && chars[j - 2].1 == '.' && chars[j - 1].1.is_alphabetic())
}

fn takes_period(word: &str, at_end: bool) -> bool {
    if !at_end {
        return false;
    }
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return true;
    }
    let mut cs = word.chars();
    // An initial (`J.`) or a dotted abbreviation (`U.S`, `e.g`).
    match (cs.next(), cs.next()) {
        (Some(c), None) => c.is_uppercase(),
        _ => {
            word.len() >= 3 && word.contains('.') && word.split('.').all(|p| p.chars().count() == 1)
        }
    }
}

/// Splits a word run (letters, digits and joiners) at hyphens and clitics.
fn split_word(text: &str, s: usize, e: usize, out: &mut Vec<Span>) {
    let w = &text[s..e];
    if w.contains('-') && !keeps_hyphens(w) {
        let mut start = s;
        for (i, c) in w.char_indices() {
            if c == '-' {
                split_clitics(text, start, s + i, out);
                push(out, s + i, s + i + 1);
                start = s + i + 1;
            }
        }
        split_clitics(text, start, e, out);
    } else {
        split_clitics(text, s, e, out);
    }
}

fn keeps_hyphens(w: &str) -> bool {
    let parts: Vec<&str> = w.split('-').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return false;
    }
    let first = parts[0].to_lowercase();
    if HYPHEN_PREFIXES.contains(&first.as_str()) && parts.len() == 2 {
        return true;
    }
    let digits = |p: &&str| p.chars().all(|c| c.is_ascii_digit());
    if parts.iter().all(digits) {
        // Phone numbers and dates stay whole; ranges like `3-4` and `1990-1995` split.
        return parts.len() >= 3
            || (parts.len() == 2 && parts[0].len() <= 3 && parts[1].len() == 4);
    }
    // Codes mixing letters and digits in every part (`x3-9890`, `ld2d-69366`).
    parts.len() >= 2
        && parts.iter().all(|p| p.chars().any(|c| c.is_ascii_digit()))
        && parts.iter().any(|p| p.chars().any(|c| c.is_alphabetic()))
}

/// Splits off a clitic at the end of a word, or an apostrophe-less contraction.
fn split_clitics(text: &str, s: usize, e: usize, out: &mut Vec<Span>) {
    let w = &text[s..e];
    // A number with a unit (`10am`, `375mm`, `39K`) is two words; ordinals and decades
    // (`21st`, `1970s`) are one.
    let digits = w
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(w.len());
    if digits > 0
        && digits < w.len()
        && w.as_bytes()[0].is_ascii_digit()
        && w[digits..].chars().all(|c| c.is_ascii_alphabetic())
    {
        let unit = w[digits..].to_ascii_lowercase();
        if !matches!(unit.as_str(), "th" | "st" | "nd" | "rd" | "s") {
            push(out, s, s + digits);
            push(out, s + digits, e);
            return;
        }
    }
    // n't: `can't` → `ca n't`, `don't` → `do n't`.
    for ap in ["n't", "n’t", "n`t"] {
        if w.len() > ap.len() {
            let cut = w.len() - ap.len();
            if w.is_char_boundary(cut) && w[cut..].to_lowercase() == ap {
                push(out, s, s + cut);
                push(out, s + cut, e);
                return;
            }
        }
    }
    for (i, c) in w.char_indices() {
        if is_apostrophe(c) && i > 0 {
            let rest = w[i + c.len_utf8()..].to_ascii_lowercase();
            if matches!(rest.as_str(), "s" | "re" | "ll" | "ve" | "m" | "d") {
                push(out, s, s + i);
                push(out, s + i, e);
                return;
            }
        }
    }
    // The table's forms are ASCII, so a match means `w` is ASCII and `cut` a boundary.
    if let Some(&(_, cut)) = BARE_CONTRACTIONS
        .iter()
        .find(|(f, _)| w.eq_ignore_ascii_case(f))
    {
        push(out, s, s + cut);
        push(out, s + cut, e);
        return;
    }
    push(out, s, e);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(t: &str) -> Vec<&str> {
        split_words_str(t)
    }

    #[test]
    fn punctuation_and_clitics() {
        assert_eq!(
            words("I can't believe it's done!"),
            ["I", "ca", "n't", "believe", "it", "'s", "done", "!"]
        );
        assert_eq!(
            words("We won't go; they'll stay."),
            ["We", "wo", "n't", "go", ";", "they", "'ll", "stay", "."]
        );
        assert_eq!(
            words("I'm sure you're right, I'd say we've won."),
            [
                "I", "'m", "sure", "you", "'re", "right", ",", "I", "'d", "say", "we", "'ve",
                "won", "."
            ]
        );
        assert_eq!(words("Bush's plan"), ["Bush", "'s", "plan"]);
        assert_eq!(
            words("I cannot, gonna wait"),
            ["I", "can", "not", ",", "gon", "na", "wait"]
        );
        assert_eq!(words("Don’t worry"), ["Do", "n’t", "worry"]);
        assert_eq!(words("O'Neil said"), ["O'Neil", "said"]);
    }

    #[test]
    fn quotes_brackets_and_runs() {
        assert_eq!(
            words("\"Hello,\" she said..."),
            ["\"", "Hello", ",", "\"", "she", "said", "..."]
        );
        assert_eq!(words("(see [1])"), ["(", "see", "[", "1", "]", ")"]);
        assert_eq!(words("Really?! Yes!!!"), ["Really", "?!", "Yes", "!!!"]);
        assert_eq!(words("wait -- what"), ["wait", "--", "what"]);
        assert_eq!(words("great :) thanks"), ["great", ":)", "thanks"]);
    }

    #[test]
    fn hyphens_follow_ewt() {
        assert_eq!(
            words("a well-known al-Qaeda e-mail"),
            ["a", "well", "-", "known", "al", "-", "Qaeda", "e-mail"]
        );
        assert_eq!(words("non-human re-read"), ["non-human", "re-read"]);
        assert_eq!(
            words("call 713-853-3989 or 345-9945"),
            ["call", "713-853-3989", "or", "345-9945"]
        );
        assert_eq!(words("pages 3-4"), ["pages", "3", "-", "4"]);
    }

    #[test]
    fn numbers_urls_emails_abbreviations() {
        assert_eq!(
            words("It costs $1,200.50 (3.5%)."),
            ["It", "costs", "$", "1,200.50", "(", "3.5", "%", ")", "."]
        );
        assert_eq!(
            words("at 5:00 on 11/28/2000"),
            ["at", "5:00", "on", "11/28/2000"]
        );
        assert_eq!(
            words("See http://example.com/a?b=c."),
            ["See", "http://example.com/a?b=c", "."]
        );
        assert_eq!(
            words("Mail carol.st.clair@enron.com, now"),
            ["Mail", "carol.st.clair@enron.com", ",", "now"]
        );
        assert_eq!(
            words("Dr. Smith of the U.S. met Mr. J. Doe, e.g. today"),
            [
                "Dr.", "Smith", "of", "the", "U.S.", "met", "Mr.", "J.", "Doe", ",", "e.g.",
                "today"
            ]
        );
        assert_eq!(words("and/or"), ["and", "/", "or"]);
    }

    #[test]
    fn units_ordinals_and_sentence_final_abbreviations() {
        assert_eq!(
            words("at 10am on the 21st, in the 1970s: 375mm"),
            ["at", "10", "am", "on", "the", "21st", ",", "in", "the", "1970s", ":", "375", "mm"]
        );
        // A period ending the line ends the sentence too; mid-line the abbreviation keeps it.
        assert_eq!(
            words("troops in the U.S."),
            ["troops", "in", "the", "U.S", "."]
        );
        assert_eq!(
            words("the U.S. Army\nand more, etc.\n"),
            ["the", "U.S.", "Army", "and", "more", ",", "etc", "."]
        );
        assert_eq!(words("Wait...? No!!"), ["Wait", "...", "?", "No", "!!"]);
        assert_eq!(
            words("\"Ryan\"<ryan...@example.co.uk>"),
            ["\"", "Ryan", "\"", "<", "ryan...@example.co.uk", ">"]
        );
        assert_eq!(
            words("(see www.example.org/a_b)"),
            ["(", "see", "www.example.org/a_b", ")"]
        );
        assert_eq!(
            words("it costs $$$ b/c of #hashtags"),
            ["it", "costs", "$$$", "b/c", "of", "#hashtags"]
        );
    }

    #[test]
    fn offsets_point_into_the_text() {
        let t = "  Héllo,\tworld’s  end… ";
        let spans = split_words(t);
        let ws: Vec<&str> = spans.iter().map(|s| &t[s.start..s.end]).collect();
        assert_eq!(ws, ["Héllo", ",", "world", "’s", "end", "…"]);
        for w in spans.windows(2) {
            assert!(w[0].end <= w[1].start);
        }
        assert!(split_words("").is_empty());
        assert!(split_words(" \n\t ").is_empty());
    }

    #[test]
    fn spans_cover_every_non_space_char_on_any_input() {
        // A deterministic pseudo-random mix of scripts, punctuation and tricky characters.
        let alphabet: Vec<char> =
            "aZ9 .,;:'’`\"“”-—_/\\@#$%&*()[]{}<>!?…\n\tİıßẞ日本🙂é\u{301}\u{200d}wwwhttp:n't"
                .chars()
                .collect();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..3000 {
            let mut t = String::new();
            let len = (state >> 59) as usize + 1;
            for _ in 0..len * 3 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                t.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            let spans = split_words(&t);
            let mut covered = 0;
            for (k, sp) in spans.iter().enumerate() {
                assert!(sp.start < sp.end, "{t:?}");
                assert!(
                    t.is_char_boundary(sp.start) && t.is_char_boundary(sp.end),
                    "{t:?}"
                );
                if k > 0 {
                    assert!(spans[k - 1].end <= sp.start, "{t:?}");
                }
                assert!(
                    t[covered..sp.start].chars().all(char::is_whitespace),
                    "{t:?} {spans:?}"
                );
                assert!(
                    !t[sp.start..sp.end].chars().any(char::is_whitespace),
                    "{t:?}"
                );
                covered = sp.end;
            }
            assert!(t[covered..].chars().all(char::is_whitespace), "{t:?}");
            let _ = split_sentences(&t, &spans);
        }
    }

    #[test]
    fn sentences() {
        let t = "Hi there. How are you?\nFine \"thanks.\" ok\n\nnext para\ncontinued line";
        let spans = split_words(t);
        let sents: Vec<Vec<&str>> = split_sentences(t, &spans)
            .into_iter()
            .map(|r| spans[r].iter().map(|s| &t[s.start..s.end]).collect())
            .collect();
        assert_eq!(
            sents,
            vec![
                vec!["Hi", "there", "."],
                vec!["How", "are", "you", "?"],
                vec!["Fine", "\"", "thanks", ".", "\""],
                vec!["ok"],
                vec!["next", "para", "continued", "line"],
            ]
        );
    }
}
