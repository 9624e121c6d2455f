//! Regression alerts (DESIGN §8): rules over the stored loss curves, each firing recorded
//! once per (rule, checkpoint, evalset, filter), logged at WARN and passed to the
//! `on_alert` hook.

pub mod hook;
pub mod rules;

use std::collections::HashMap;

use crate::config::AlertSettings;
use crate::curves::{Curve, Point};
use crate::evalset::filter::Filter;
use crate::evalset::EvalSet;
use crate::stats::paired::{paired_diff, PairedDiff};
use crate::store::Store;
use hook::HookRunner;
use rules::{baseline_firings, rise_firings, Firing, RuleKind};

/// What a `rise` rule needs of an evalset: each filter's token mask and the documents, for
/// the paired document-cluster bootstrap.
pub struct TokenSets {
    docs: Vec<u32>,
    doc_count: usize,
    masks: HashMap<String, Vec<bool>>,
}

impl TokenSets {
    /// Masks of `filters` over `es`.
    pub fn new(es: &EvalSet, filters: &[Filter]) -> anyhow::Result<TokenSets> {
        let labels = es.labels()?;
        let masks = filters
            .iter()
            .map(|f| {
                let mask = labels.iter().map(|t| t.pos > 0 && f.matches(t)).collect();
                (f.name().to_string(), mask)
            })
            .collect();
        Ok(TokenSets {
            docs: es.token_docs(),
            doc_count: es.header().docs.len(),
            masks,
        })
    }
}

/// Evaluates the configured rules after each commit.
pub struct Alerter {
    settings: AlertSettings,
    token_sets: HashMap<i64, TokenSets>,
    resamples: usize,
    seed: u64,
    /// Paired differences already computed, by (evalset, filter, previous, current).
    paired: HashMap<(i64, String, i64, i64), Option<PairedDiff>>,
    hook: Option<HookRunner>,
}

impl Alerter {
    /// An alerter for `settings`; `token_sets` by evalset id (only `rise` rules use them).
    pub fn new(
        settings: AlertSettings,
        token_sets: HashMap<i64, TokenSets>,
        resamples: usize,
        seed: u64,
    ) -> anyhow::Result<Alerter> {
        let hook = match &settings.on_alert {
            Some(cmd) => Some(HookRunner::start(cmd.clone(), settings.hook_timeout)?),
            None => None,
        };
        Ok(Alerter {
            settings,
            token_sets,
            resamples,
            seed,
            paired: HashMap::new(),
            hook,
        })
    }

    /// Whether any rule needs per-token masks.
    pub fn needs_token_sets(settings: &AlertSettings) -> bool {
        settings
            .rules
            .iter()
            .any(|r| matches!(r.kind, RuleKind::Rise { .. }))
    }

    /// Runs every rule over the store's curves; records, logs and hooks the firings that are
    /// new, and returns them with their ids.
    pub fn evaluate(&mut self, store: &mut Store) -> anyhow::Result<Vec<(i64, Firing)>> {
        if self.settings.rules.is_empty() {
            return Ok(Vec::new());
        }
        let curves = store.curves(None)?;
        let mut firings: Vec<Firing> = Vec::new();
        for rule in &self.settings.rules {
            if let RuleKind::Rise { .. } = rule.kind {
                let (cache, sets) = (&mut self.paired, &self.token_sets);
                let (resamples, seed) = (self.resamples, self.seed);
                firings.extend(rise_firings(rule, &curves, |c, prev, cur| {
                    let key = (
                        c.evalset_id,
                        c.filter.clone(),
                        prev.checkpoint,
                        cur.checkpoint,
                    );
                    if let Some(d) = cache.get(&key) {
                        return Ok(*d);
                    }
                    let d = paired_rise(store, sets, c, prev, cur, resamples, seed)?;
                    cache.insert(key, d);
                    Ok(d)
                })?);
            } else {
                firings.extend(baseline_firings(rule, &curves));
            }
        }
        let mut new = Vec::new();
        for f in firings {
            let Some(id) = store.record_alert(&f)? else {
                continue;
            };
            tracing::warn!(alert = id, rule = %f.rule, run = %f.run, filter = %f.filter,
                checkpoint = %f.checkpoint, value = f.value, threshold = f.threshold, "{}", f.message);
            if let Some(hook) = &self.hook {
                hook.send(hook_payload(id, &f)?);
            }
            new.push((id, f));
        }
        Ok(new)
    }
}

/// The hook's stdin: the firing's fields and its id.
fn hook_payload(id: i64, firing: &Firing) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(firing)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("id".into(), id.into());
    }
    Ok(v.to_string())
}

/// `current − previous` over the filter's tokens from the stored per-token losses; `None`
/// when either checkpoint's losses or the filter's mask are not available.
fn paired_rise(
    store: &Store,
    sets: &HashMap<i64, TokenSets>,
    c: &Curve,
    prev: &Point,
    cur: &Point,
    resamples: usize,
    seed: u64,
) -> anyhow::Result<Option<PairedDiff>> {
    let Some(set) = sets.get(&c.evalset_id) else {
        return Ok(None);
    };
    let Some(mask) = set.masks.get(&c.filter) else {
        return Ok(None);
    };
    let (Some(a), Some(b)) = (
        store.token_scores(cur.checkpoint, c.evalset_id)?,
        store.token_scores(prev.checkpoint, c.evalset_id)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(paired_diff(
        &a.loss,
        &b.loss,
        |i| mask.get(i).copied().unwrap_or(false),
        &set.docs,
        set.doc_count,
        resamples,
        seed,
    )))
}
