//! Prose from templates: a cast of named entities referred back to by pronouns, content words
//! of every open class, existential "there", parentheticals and quotes.

use super::{capitalize, Pick};
use rand::rngs::StdRng;
use rand::Rng;

/// A character of a story, with the pronouns that track it.
struct Entity {
    name: &'static str,
    subject: &'static str,
    object: &'static str,
    possessive: &'static str,
}

const PEOPLE: &[Entity] = &[
    Entity {
        name: "Mara",
        subject: "she",
        object: "her",
        possessive: "her",
    },
    Entity {
        name: "Tobias",
        subject: "he",
        object: "him",
        possessive: "his",
    },
    Entity {
        name: "Ines",
        subject: "she",
        object: "her",
        possessive: "her",
    },
    Entity {
        name: "Oskar",
        subject: "he",
        object: "him",
        possessive: "his",
    },
    Entity {
        name: "Dr. Okafor",
        subject: "she",
        object: "her",
        possessive: "her",
    },
    Entity {
        name: "the captain",
        subject: "he",
        object: "him",
        possessive: "his",
    },
    Entity {
        name: "the committee",
        subject: "it",
        object: "it",
        possessive: "its",
    },
    Entity {
        name: "the twins",
        subject: "they",
        object: "them",
        possessive: "their",
    },
    Entity {
        name: "Professor Lindqvist",
        subject: "he",
        object: "him",
        possessive: "his",
    },
    Entity {
        name: "Aunt Dorothea",
        subject: "she",
        object: "her",
        possessive: "her",
    },
];

const PLACES: &[&str] = &[
    "harbor",
    "library",
    "old mill",
    "station",
    "market square",
    "laboratory",
    "orchard",
    "lighthouse",
    "council chamber",
    "valley road",
    "river bank",
    "museum",
];
const NOUNS: &[&str] = &[
    "letter",
    "lantern",
    "map",
    "notebook",
    "basket",
    "key",
    "report",
    "telescope",
    "bridge",
    "storm",
    "garden",
    "experiment",
    "ledger",
    "violin",
    "bicycle",
    "window",
    "harvest",
    "signal",
];
const ADJECTIVES: &[&str] = &[
    "old",
    "quiet",
    "bright",
    "narrow",
    "heavy",
    "curious",
    "broken",
    "careful",
    "distant",
    "golden",
    "strange",
    "patient",
    "crowded",
    "fragile",
    "remarkable",
    "cold",
];
const ADVERBS: &[&str] = &[
    "slowly",
    "quietly",
    "suddenly",
    "carefully",
    "finally",
    "rarely",
    "almost",
    "eagerly",
    "gently",
    "again",
    "reluctantly",
    "surprisingly",
];
const VERBS_PAST: &[&str] = &[
    "found",
    "carried",
    "opened",
    "repaired",
    "studied",
    "hid",
    "painted",
    "measured",
    "lost",
    "returned",
    "described",
    "borrowed",
];
const MOTION: &[&str] = &[
    "walked", "hurried", "drove", "wandered", "returned", "climbed",
];
const TIMES: &[&str] = &[
    "In the morning",
    "Later that week",
    "Before dawn",
    "By the evening",
    "After the rain",
    "On Sunday",
    "Years later",
    "At noon",
];

/// One prose document of about `paragraphs` paragraphs.
pub fn document(rng: &mut StdRng, paragraphs: usize) -> String {
    let cast: Vec<&Entity> = (0..3).map(|_| rng.pick_ref(PEOPLE)).collect();
    let mut out = String::new();
    for p in 0..paragraphs {
        if p > 0 {
            out.push_str("\n\n");
        }
        let sentences = rng.random_range(3..7);
        for s in 0..sentences {
            if s > 0 {
                out.push(' ');
            }
            let who = cast[rng.random_range(0..cast.len())];
            // Name at the start of a paragraph, pronouns after, as a writer would.
            let subject = if s == 0 {
                capitalize(who.name)
            } else {
                capitalize(who.subject)
            };
            out.push_str(&sentence(rng, who, &subject, &cast));
        }
    }
    out
}

fn sentence(rng: &mut StdRng, who: &Entity, subject: &str, cast: &[&Entity]) -> String {
    let adj = rng.pick(ADJECTIVES);
    let noun = rng.pick(NOUNS);
    let place = rng.pick(PLACES);
    let adv = rng.pick(ADVERBS);
    let other = cast[rng.random_range(0..cast.len())];
    match rng.random_range(0..10) {
        0 => format!(
            "{subject} {} to the {place} and {} {} {adj} {noun}.",
            rng.pick(MOTION),
            rng.pick(VERBS_PAST),
            who.possessive
        ),
        1 => format!(
            "There was a {adj} {noun} near the {place}, and there were {} {}s beside it.",
            rng.pick(&["two", "three", "several", "many"]),
            rng.pick(NOUNS)
        ),
        2 => format!(
            "{} {} gave {} the {noun} (the {adj} one from the {place}).",
            rng.pick(TIMES),
            other.name,
            who.object
        ),
        3 => format!(
            "\"The {noun} is {adj},\" {} said {adv}, \"and {} should see it.\"",
            who.subject, other.subject
        ),
        4 => format!(
            "{subject} {adv} {} the {adj} {noun} that {} had left in the {place}.",
            rng.pick(VERBS_PAST),
            other.name
        ),
        5 => format!(
            "Because the {noun} was {adj}, {} {} it {adv}.",
            who.subject,
            rng.pick(VERBS_PAST)
        ),
        6 => format!(
            "{subject} was {} {adj} [{}] when {} saw the {place}.",
            rng.pick(&["very", "rather", "quite", "unusually"]),
            rng.pick(&["as usual", "for once", "oddly"]),
            who.subject
        ),
        7 => format!(
            "{} there is a {adj} {noun} in the {place}, {} wrote {adv}.",
            rng.pick(TIMES),
            who.name
        ),
        8 => format!(
            "Neither {} nor {} {} the {noun}, which was {adj} and {}.",
            who.name,
            other.name,
            rng.pick(VERBS_PAST),
            rng.pick(ADJECTIVES)
        ),
        _ => format!(
            "{subject} {} {} {noun} {adv} (and {} {} {}).",
            rng.pick(VERBS_PAST),
            other.possessive,
            other.subject,
            rng.pick(&["agreed", "objected", "laughed", "waited"]),
            rng.pick(ADVERBS)
        ),
    }
}

/// A short paragraph of prose, for text inside markup.
pub fn paragraph(rng: &mut StdRng) -> String {
    let who = rng.pick_ref(PEOPLE);
    let cast = [who, rng.pick_ref(PEOPLE)];
    sentence(rng, who, &capitalize(who.name), &cast)
}
