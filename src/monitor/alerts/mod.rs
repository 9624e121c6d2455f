//! Regression alerts (DESIGN §8): rules over the stored loss curves, each firing recorded
//! once per (rule, checkpoint, evalset, filter), logged at WARN and passed to the
//! `on_alert` hook at least once (see [`hook`]).

pub mod hook;
pub mod rules;

use std::collections::HashMap;

use std::sync::Arc;

use crate::analysis::curves::{Curve, Point};
use crate::analysis::stats::paired::PairedDiff;
use crate::monitor::alerts::rules::AlertSettings;
use crate::monitor::paired_gaps::TokenSets;
use crate::store::alerts::Firing;
use crate::store::{Location, Store};
use hook::HookRunner;
use rules::{baseline_firings, retrieval_firings, rise_firings, RuleKind};

/// Evaluates the configured rules after each commit.
pub struct Alerter {
    settings: AlertSettings,
    token_sets: Arc<HashMap<i64, TokenSets>>,
    resamples: usize,
    seed: u64,
    /// Paired differences already computed, by (evalset, filter, previous, current).
    paired: HashMap<(i64, String, i64, i64), Option<PairedDiff>>,
    hook: Option<HookRunner>,
}

impl Alerter {
    /// An alerter for `settings` on the store at `db` (the hook thread marks deliveries
    /// through its own connection); `token_sets` by evalset id (only `rise` rules use them).
    pub fn new(
        settings: AlertSettings,
        db: &Location,
        token_sets: Arc<HashMap<i64, TokenSets>>,
        resamples: usize,
        seed: u64,
    ) -> anyhow::Result<Alerter> {
        let hook = match &settings.on_alert {
            Some(cmd) => Some(HookRunner::start(cmd.clone(), settings.hook_timeout, db)?),
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
                let (cache, sets) = (&mut self.paired, &*self.token_sets);
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
                firings.extend(retrieval_firings(rule, &curves));
            }
        }
        let mut new = Vec::new();
        for f in firings {
            let Some(id) = store.record_alert(&f)? else {
                continue;
            };
            tracing::warn!(alert = id, rule = %f.rule, run = %f.run, filter = %f.filter,
                checkpoint = %f.checkpoint, value = f.value, threshold = f.threshold, "{}", f.message);
            match &self.hook {
                Some(hook) => hook.send(id, hook_payload(id, &f)?),
                // Nothing to hand it to: a hook configured later does not get old firings.
                None => store.mark_alert_delivered(id)?,
            }
            new.push((id, f));
        }
        Ok(new)
    }

    /// Hands every stored firing the hook has not taken yet to the hook, oldest first: the
    /// ones a daemon that died, or a hook that failed or timed out, left undelivered. Called
    /// once at start, before any new firing; returns how many were queued.
    pub fn resend_undelivered(&self, store: &Store) -> anyhow::Result<usize> {
        let Some(hook) = &self.hook else {
            return Ok(0);
        };
        let pending = store.undelivered_alerts()?;
        for a in &pending {
            tracing::info!(alert = a.id, rule = %a.firing.rule, run = %a.firing.run,
                checkpoint = %a.firing.checkpoint, "sending an undelivered alert to the hook again");
            hook.send(a.id, hook_payload(a.id, &a.firing)?);
        }
        Ok(pending.len())
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
    let (Some(a), Some(b)) = (
        store.token_scores(cur.checkpoint, c.evalset_id)?,
        store.token_scores(prev.checkpoint, c.evalset_id)?,
    ) else {
        return Ok(None);
    };
    Ok(set.paired(&c.filter, &a.loss, &b.loss, resamples, seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::alerts::rules::Rule;
    use crate::store::testing;

    const TOKENS: usize = 40;

    /// A store with two annealed checkpoints of one run whose per-token losses are `first`
    /// and `second` everywhere (position 0 unscored).
    fn store_with(first: f32, second: f32) -> (tempfile::TempDir, Store, i64) {
        let (dir, mut store, es) = testing::store(TOKENS);
        let run = testing::run(&mut store, "hy", None);
        for (step, loss) in [(100u64, first), (200, second)] {
            testing::scored(&mut store, run, es, step, true, &[loss; TOKENS]);
        }
        (dir, store, es)
    }

    /// An alerter with one `rise` rule on the test store in `dir`, and the hook `on_alert`.
    fn alerter(
        dir: &std::path::Path,
        es: i64,
        min_delta: f64,
        on_alert: Option<String>,
    ) -> Alerter {
        let sets = TokenSets::from_parts(
            (0..TOKENS as u32).map(|i| i / 8).collect(),
            TOKENS.div_ceil(8),
            vec![("all".to_string(), (0..TOKENS).map(|i| i > 0).collect())],
        );
        let settings = AlertSettings {
            rules: vec![Rule {
                name: "rise".into(),
                kind: RuleKind::Rise { min_delta },
                filters: vec![],
                runs: vec![],
                evalsets: vec![],
            }],
            on_alert,
            hook_timeout: std::time::Duration::from_secs(5),
        };
        let db = dir.join("m.db");
        Alerter::new(settings, &db.into(), Arc::new([(es, sets)].into()), 200, 0).expect("alerter")
    }

    #[test]
    fn a_rise_in_stored_losses_fires_once_across_restarts() {
        let (dir, mut store, es) = store_with(2.0, 2.5);
        let fired = alerter(dir.path(), es, 0.1, None)
            .evaluate(&mut store)
            .expect("rules");
        assert_eq!(fired.len(), 1);
        let f = &fired[0].1;
        assert_eq!((f.checkpoint.as_str(), f.step), ("step200-anneal", 200));
        assert!((f.value - 0.5).abs() < 1e-6 && f.threshold == 0.1);
        let mut same = alerter(dir.path(), es, 0.1, None);
        assert!(same.evaluate(&mut store).expect("rules").is_empty());
        assert!(same.evaluate(&mut store).expect("rules").is_empty());
        let stored = store.alerts().expect("alerts");
        assert_eq!(stored.len(), 1);
        assert!(
            stored[0].delivered_at.is_some(),
            "with no hook there is nothing to wait for"
        );
    }

    #[test]
    fn a_firing_the_hook_failed_on_is_sent_again_at_the_next_start_until_it_exits_0() {
        let (dir, mut store, es) = store_with(2.0, 2.5);
        // Dropping an alerter waits for its hook, as a daemon's shutdown does.
        let fired = {
            let mut failing = alerter(dir.path(), es, 0.1, Some("exit 3".into()));
            failing.evaluate(&mut store).expect("rules")
        };
        assert_eq!(fired.len(), 1);
        let id = fired[0].0;
        let pending = store.undelivered_alerts().expect("undelivered");
        assert_eq!(pending.iter().map(|a| a.id).collect::<Vec<_>>(), [id]);

        let out = dir.path().join("hook.jsonl");
        let hook = format!("cat >> '{}'", out.display());
        {
            let restarted = alerter(dir.path(), es, 0.1, Some(hook.clone()));
            assert_eq!(restarted.resend_undelivered(&store).expect("resend"), 1);
        }
        let got = std::fs::read_to_string(&out).expect("hook output");
        let payloads: Vec<serde_json::Value> = got
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(payloads.len(), 1);
        assert_eq!(payloads[0]["id"].as_i64(), Some(id));
        assert_eq!(payloads[0]["checkpoint"], "step200-anneal");
        assert!(store.undelivered_alerts().expect("undelivered").is_empty());
        let again = alerter(dir.path(), es, 0.1, Some(hook));
        assert_eq!(again.resend_undelivered(&store).expect("resend"), 0);
    }

    #[test]
    fn a_rise_below_min_delta_or_a_fall_does_not_fire() {
        let (dir, mut store, es) = store_with(2.0, 2.5);
        assert!(alerter(dir.path(), es, 0.6, None)
            .evaluate(&mut store)
            .expect("rules")
            .is_empty());
        let (dir, mut store, es) = store_with(2.5, 2.0);
        assert!(alerter(dir.path(), es, 0.0, None)
            .evaluate(&mut store)
            .expect("rules")
            .is_empty());
        assert!(store.alerts().expect("alerts").is_empty());
    }
}
