//! The alerting part of the watch config: `[[alerts]]` rules, `on_alert` and its timeout.

use serde::Deserialize;
use toml::Spanned;

use super::{seconds, Errors};
use crate::analysis::recall::RecallRow;
use crate::monitor::alerts::rules::{AlertSettings, Rule, RuleKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    name: Spanned<String>,
    rule: Spanned<String>,
    #[serde(default)]
    min_delta: Option<Spanned<f64>>,
    #[serde(default)]
    max_gap: Option<Spanned<f64>>,
    #[serde(default)]
    min_gain: Option<Spanned<f64>>,
    #[serde(default)]
    gaps: Option<Spanned<Vec<u32>>>,
    #[serde(default)]
    filters: Vec<String>,
    #[serde(default)]
    runs: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    evalsets: Option<Spanned<Vec<String>>>,
}

/// Names a rule may refer to.
pub(super) struct Known<'a> {
    /// Configured runs.
    pub runs: &'a [String],
    /// Built-in and user filters.
    pub filters: &'a [String],
    /// Configured evalsets.
    pub evalsets: &'a [String],
}

pub(super) fn default_hook_timeout() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}

/// Checks the rules against the configured runs and filter names.
pub(super) fn validate(
    raw: Vec<RawRule>,
    on_alert: Option<String>,
    timeout: &Spanned<f64>,
    known: &Known,
    errs: &Errors,
) -> anyhow::Result<AlertSettings> {
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("alerts[{i}].{k}");
        let name = r.name.get_ref().clone();
        if name.is_empty() || rules.iter().any(|o| o.name == name) {
            return Err(errs.spanned(&r.name, &key("name"), "empty or used twice"));
        }
        let finite = |v: &Spanned<f64>, k: &str| {
            if v.get_ref().is_finite() {
                Ok(*v.get_ref())
            } else {
                Err(errs.spanned(v, &key(k), "must be a finite number of nats"))
            }
        };
        let unused = |v: &Option<Spanned<f64>>, k: &str| match v {
            Some(v) => Err(errs.spanned(
                v,
                &key(k),
                &format!("does not apply to a `{}` rule", r.rule.get_ref()),
            )),
            None => Ok(()),
        };
        let retrieval = r.rule.get_ref() == "retrieval_drop";
        if !retrieval {
            unused(&r.min_gain, "min_gain")?;
            if let Some(g) = &r.gaps {
                return Err(errs.spanned(g, &key("gaps"), "only for `retrieval_drop` rules"));
            }
        } else if !r.filters.is_empty() {
            return Err(errs.spanned(
                &r.name,
                &key("filters"),
                "a `retrieval_drop` rule watches `gaps`, not filters",
            ));
        }
        let kind = match r.rule.get_ref().as_str() {
            "rise" => {
                unused(&r.max_gap, "max_gap")?;
                let min_delta = r
                    .min_delta
                    .as_ref()
                    .map_or(Ok(0.0), |v| finite(v, "min_delta"))?;
                RuleKind::Rise { min_delta }
            }
            "gap" => {
                unused(&r.min_delta, "min_delta")?;
                let Some(g) = &r.max_gap else {
                    return Err(errs.spanned(&r.rule, &key("max_gap"), "a `gap` rule needs it"));
                };
                RuleKind::Gap {
                    max_gap: finite(g, "max_gap")?,
                }
            }
            "sign_flip" => {
                unused(&r.min_delta, "min_delta")?;
                unused(&r.max_gap, "max_gap")?;
                RuleKind::SignFlip
            }
            "retrieval_drop" => {
                unused(&r.min_delta, "min_delta")?;
                unused(&r.max_gap, "max_gap")?;
                RuleKind::RetrievalDrop {
                    min_gain: r
                        .min_gain
                        .as_ref()
                        .map(|v| finite(v, "min_gain"))
                        .transpose()?,
                }
            }
            other => {
                return Err(errs.spanned(
                    &r.rule,
                    &key("rule"),
                    &format!("unknown rule {other:?} (rise, gap, sign_flip, retrieval_drop)"),
                ))
            }
        };
        let known_filter = |f: &String| known.filters.contains(f) || RecallRow::parse(f).is_some();
        if let Some(f) = r.filters.iter().find(|f| !known_filter(f)) {
            return Err(errs.spanned(&r.name, &key("filters"), &format!("no filter named {f:?}")));
        }
        let names = |list: Option<Spanned<Vec<String>>>, k: &str, of: &[String], what: &str| {
            let Some(list) = list else {
                return Ok(Vec::new());
            };
            match list.get_ref().iter().find(|n| !of.contains(n)) {
                Some(unknown) => {
                    Err(errs.spanned(&list, &key(k), &format!("no {what} named {unknown:?}")))
                }
                None => Ok(list.into_inner()),
            }
        };
        let runs = names(r.runs, "runs", known.runs, "run")?;
        let evalsets = names(r.evalsets, "evalsets", known.evalsets, "evalset")?;
        let filters = match r.gaps {
            Some(gaps) => gaps
                .into_inner()
                .into_iter()
                .map(|g| RecallRow::Gain(g).name())
                .collect(),
            None => r.filters,
        };
        rules.push(Rule {
            name,
            kind,
            filters,
            runs,
            evalsets,
        });
    }
    Ok(AlertSettings {
        rules,
        on_alert: on_alert.filter(|c| !c.trim().is_empty()),
        hook_timeout: seconds(errs, timeout, "on_alert_timeout_secs", 0.1)?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::monitor::alerts::rules::RuleKind;
    use crate::monitor::config::tests::OK;
    use crate::monitor::config::WatchConfig;

    /// The shared test config with a hook and `rules` appended.
    fn text(rules: &str) -> String {
        format!("on_alert = \"notify-send filtermon\"\n{OK}{rules}")
    }

    fn parse(rules: &str) -> anyhow::Result<WatchConfig> {
        WatchConfig::parse(&text(rules), Path::new("w.toml"))
    }

    fn err(rules: &str) -> String {
        crate::monitor::config::tests::err(&text(rules))
    }

    #[test]
    fn rules_parse_with_defaults() {
        let c = parse(
            "[[alerts]]\nname = \"r\"\nrule = \"rise\"\n\
             [[alerts]]\nname = \"g\"\nrule = \"gap\"\nmax_gap = 0.1\nfilters = [\"copy5\"]\nruns = [\"a\"]\n\
             [[alerts]]\nname = \"s\"\nrule = \"sign_flip\"\n\
             [[alerts]]\nname = \"d\"\nrule = \"retrieval_drop\"\nmin_gain = 1.5\ngaps = [512]\n",
        )
        .expect("valid");
        let a = &c.alerts;
        assert_eq!(a.on_alert.as_deref(), Some("notify-send filtermon"));
        assert_eq!(a.hook_timeout, std::time::Duration::from_secs(10));
        assert_eq!(a.rules[0].kind, RuleKind::Rise { min_delta: 0.0 });
        assert_eq!(a.rules[1].kind, RuleKind::Gap { max_gap: 0.1 });
        assert_eq!((a.rules[1].filters.len(), a.rules[1].runs.len()), (1, 1));
        assert_eq!(a.rules[2].kind, RuleKind::SignFlip);
        assert_eq!(
            a.rules[3].kind,
            RuleKind::RetrievalDrop {
                min_gain: Some(1.5)
            }
        );
        assert_eq!(a.rules[3].filters, vec!["recall.gain@512".to_string()]);
    }

    #[test]
    fn mistakes_name_the_rule_key() {
        let e = err("[[alerts]]\nname = \"g\"\nrule = \"gap\"\n");
        assert!(
            e.contains("alerts[0].max_gap: a `gap` rule needs it"),
            "{e}"
        );
        let e = err("[[alerts]]\nname = \"x\"\nrule = \"drop\"\n");
        assert!(
            e.contains("w.toml:23: alerts[0].rule: unknown rule \"drop\""),
            "{e}"
        );
        let e = err("[[alerts]]\nname = \"x\"\nrule = \"rise\"\nmax_gap = 1.0\n");
        assert!(
            e.contains("alerts[0].max_gap: does not apply to a `rise` rule"),
            "{e}"
        );
        let e = err("[[alerts]]\nname = \"x\"\nrule = \"rise\"\nruns = [\"zz\"]\n");
        assert!(e.contains("alerts[0].runs: no run named \"zz\""), "{e}");
        let e = err("[[alerts]]\nname = \"x\"\nrule = \"rise\"\nevalsets = [\"web\"]\n");
        assert!(
            e.contains("alerts[0].evalsets: no evalset named \"web\""),
            "{e}"
        );
        let e = err("[[alerts]]\nname = \"x\"\nrule = \"rise\"\nfilters = [\"nope\"]\n");
        assert!(
            e.contains("alerts[0].filters: no filter named \"nope\""),
            "{e}"
        );
        let e = err("[[alerts]]\nname = \"x\"\nrule = \"gap\"\nmax_gap = 1.0\ngaps = [64]\n");
        assert!(
            e.contains("alerts[0].gaps: only for `retrieval_drop` rules"),
            "{e}"
        );
        let e = err("[[alerts]]\nname = \"x\"\nrule = \"retrieval_drop\"\nfilters = [\"all\"]\n");
        assert!(e.contains("watches `gaps`, not filters"), "{e}");
        let e = err("[[alerts]]\nname = \"x\"\nrule = \"rise\"\nthreshold = 1\n");
        assert!(e.contains("unknown field `threshold`"), "{e}");
        let e = err("[[alerts]]\nname = \"x\"\nrule = \"rise\"\n[[alerts]]\nname = \"x\"\nrule = \"rise\"\n");
        assert!(e.contains("alerts[1].name: empty or used twice"), "{e}");
    }
}
