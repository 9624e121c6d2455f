//! The alerting part of the watch config: `[[alerts]]` rules, `on_alert` and its timeout.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{seconds, Errors};
use crate::alerts::rules::{Rule, RuleKind};

/// Alert rules and what to run when one fires.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Rules, by unique name.
    pub rules: Vec<Rule>,
    /// Shell command run with each new firing as one JSON object on stdin.
    pub on_alert: Option<String>,
    /// How long the hook may run before it is killed.
    pub hook_timeout: Duration,
}

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
    filters: Vec<String>,
    #[serde(default)]
    runs: Option<Spanned<Vec<String>>>,
}

pub(super) fn default_hook_timeout() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}

/// Checks the rules against the configured runs and filter names.
pub(super) fn validate(
    raw: Vec<RawRule>,
    on_alert: Option<String>,
    timeout: &Spanned<f64>,
    run_names: &[String],
    filter_names: &[String],
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
            other => {
                return Err(errs.spanned(
                    &r.rule,
                    &key("rule"),
                    &format!("unknown rule {other:?} (rise, gap, sign_flip)"),
                ))
            }
        };
        if let Some(f) = r.filters.iter().find(|f| !filter_names.contains(f)) {
            return Err(errs.spanned(&r.name, &key("filters"), &format!("no filter named {f:?}")));
        }
        let runs = match r.runs {
            Some(runs) => {
                if let Some(unknown) = runs.get_ref().iter().find(|n| !run_names.contains(n)) {
                    return Err(errs.spanned(
                        &runs,
                        &key("runs"),
                        &format!("no run named {unknown:?}"),
                    ));
                }
                runs.into_inner()
            }
            None => Vec::new(),
        };
        rules.push(Rule {
            name,
            kind,
            filters: r.filters,
            runs,
        });
    }
    Ok(AlertSettings {
        rules,
        on_alert: on_alert.filter(|c| !c.trim().is_empty()),
        hook_timeout: seconds(errs, timeout, "on_alert_timeout_secs", 0.1)?,
    })
}
