//! The `[executor]` table of the watch config: where the scoring runs. `kind = "local"` (the
//! default) runs in-process workers on `device`/`devices`; `kind = "slurm"` submits Slurm jobs
//! that run `filtermon worker`, and takes the keys of the jobs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{resolve, seconds, Errors};

/// Where the daemon's scoring runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Executor {
    /// In-process workers, one per configured device.
    #[default]
    Local,
    /// Slurm jobs, each running one `filtermon worker`.
    Slurm(SlurmSettings),
}

/// The Slurm jobs of `kind = "slurm"`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmSettings {
    /// `--partition`, when set.
    pub partition: Option<String>,
    /// `--gres` (e.g. `gpu:1`), when set and not empty.
    pub gres: Option<String>,
    /// `--time` (e.g. `02:00:00`), when set.
    pub time: Option<String>,
    /// `--account`, when set.
    pub account: Option<String>,
    /// Most worker jobs queued or running at once.
    pub max_jobs: usize,
    /// Further sbatch options, one `#SBATCH` line each.
    pub extra: Vec<String>,
    /// A worker exits once the queue has had no due job for this long.
    pub worker_idle: Duration,
    /// Folder of the sbatch script and the workers' Slurm output files.
    pub logs: PathBuf,
}

/// Default `max_jobs`.
pub const DEFAULT_MAX_JOBS: usize = 4;

/// Default `worker_idle_secs`: how long a worker waits for work before its job ends. Long
/// enough to take the next checkpoint of a run that saves often without a new job's queue
/// wait and start; short enough not to hold a GPU idle for long.
pub const DEFAULT_WORKER_IDLE: Duration = Duration::from_secs(120);

/// Default `logs`, relative to the config file's folder.
const DEFAULT_LOGS: &str = "slurm";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawKind {
    Local,
    Slurm,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExecutor {
    #[serde(default)]
    kind: Option<Spanned<RawKind>>,
    #[serde(default)]
    partition: Option<Spanned<String>>,
    #[serde(default)]
    gres: Option<Spanned<String>>,
    #[serde(default)]
    time: Option<Spanned<String>>,
    #[serde(default)]
    account: Option<Spanned<String>>,
    #[serde(default)]
    max_jobs: Option<Spanned<i64>>,
    #[serde(default)]
    extra: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    worker_idle_secs: Option<Spanned<f64>>,
    #[serde(default)]
    logs: Option<Spanned<PathBuf>>,
}

/// Validates `[executor]` (absent: local).
pub(super) fn validate(
    raw: Option<RawExecutor>,
    base: &Path,
    errs: &Errors,
) -> anyhow::Result<Executor> {
    let Some(raw) = raw else {
        return Ok(Executor::Local);
    };
    let kind = raw.kind.as_ref().map_or(RawKind::Local, |k| *k.get_ref());
    if kind == RawKind::Local {
        // A Slurm key under a local executor is a forgotten `kind = "slurm"`, or a leftover:
        // either way it would be silently ignored.
        let slurm_only: [(&str, Option<std::ops::Range<usize>>); 8] = [
            ("partition", raw.partition.as_ref().map(Spanned::span)),
            ("gres", raw.gres.as_ref().map(Spanned::span)),
            ("time", raw.time.as_ref().map(Spanned::span)),
            ("account", raw.account.as_ref().map(Spanned::span)),
            ("max_jobs", raw.max_jobs.as_ref().map(Spanned::span)),
            ("extra", raw.extra.as_ref().map(Spanned::span)),
            (
                "worker_idle_secs",
                raw.worker_idle_secs.as_ref().map(Spanned::span),
            ),
            ("logs", raw.logs.as_ref().map(Spanned::span)),
        ];
        if let Some((key, span)) = slurm_only.into_iter().find(|(_, s)| s.is_some()) {
            return Err(errs.at(
                span,
                &format!("executor.{key}"),
                "only used with kind = \"slurm\"",
            ));
        }
        return Ok(Executor::Local);
    }
    let option = |v: &Option<Spanned<String>>, key: &str| -> anyhow::Result<Option<String>> {
        let Some(v) = v else { return Ok(None) };
        let key = format!("executor.{key}");
        if v.get_ref().trim().is_empty() {
            return Err(errs.spanned(v, &key, "is empty (leave it out for Slurm's default)"));
        }
        script_safe(v, &key, errs)?;
        Ok(Some(v.get_ref().clone()))
    };
    let gres = match &raw.gres {
        // An empty `gres` asks for no generic resource, as leaving it out does.
        Some(g) if g.get_ref().trim().is_empty() => None,
        Some(g) => {
            script_safe(g, "executor.gres", errs)?;
            Some(g.get_ref().clone())
        }
        None => None,
    };
    let max_jobs = match &raw.max_jobs {
        Some(m) => usize::try_from(*m.get_ref())
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| errs.spanned(m, "executor.max_jobs", "must be at least 1"))?,
        None => DEFAULT_MAX_JOBS,
    };
    let mut extra = Vec::new();
    for (i, e) in raw.extra.iter().flat_map(|l| l.get_ref()).enumerate() {
        let key = format!("executor.extra[{i}]");
        if !e.get_ref().starts_with('-') {
            return Err(errs.spanned(e, &key, "must be an sbatch option, e.g. \"--qos=high\""));
        }
        script_safe(e, &key, errs)?;
        extra.push(e.get_ref().clone());
    }
    let worker_idle = match &raw.worker_idle_secs {
        // NaN is no number of seconds either.
        Some(s) if s.get_ref().is_nan() || *s.get_ref() <= 0.0 => {
            return Err(errs.spanned(
                s,
                "executor.worker_idle_secs",
                "must be a number of seconds > 0",
            ))
        }
        Some(s) => seconds(errs, s, "executor.worker_idle_secs", 0.0)?,
        None => DEFAULT_WORKER_IDLE,
    };
    let logs = match &raw.logs {
        Some(l) => {
            let dir = resolve(base, l.get_ref());
            super::not_a_folder(&dir, l, "executor.logs", errs)?;
            dir
        }
        None => base.join(DEFAULT_LOGS),
    };
    Ok(Executor::Slurm(SlurmSettings {
        partition: option(&raw.partition, "partition")?,
        gres,
        time: option(&raw.time, "time")?,
        account: option(&raw.account, "account")?,
        max_jobs,
        extra,
        worker_idle,
        logs,
    }))
}

/// Refuses a value that would break out of its `#SBATCH` line in the generated script.
fn script_safe(v: &Spanned<String>, key: &str, errs: &Errors) -> anyhow::Result<()> {
    if v.get_ref().contains(['\n', '\r']) {
        return Err(errs.spanned(v, key, "must be on one line"));
    }
    Ok(())
}

#[cfg(test)]
impl SlurmSettings {
    /// `kind = "slurm"` with no other key, its logs in `logs`.
    pub(crate) fn defaults(logs: PathBuf) -> SlurmSettings {
        SlurmSettings {
            partition: None,
            gres: None,
            time: None,
            account: None,
            max_jobs: 4,
            extra: Vec::new(),
            worker_idle: Duration::from_secs(120),
            logs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, OK};
    use super::*;
    use crate::monitor::config::WatchConfig;

    fn executor(table: &str) -> Executor {
        WatchConfig::parse(
            &format!("{OK}[executor]\n{table}\n"),
            Path::new("/c/w.toml"),
        )
        .expect("valid")
        .executor
    }

    /// The line of `[executor]`'s first key in a config built as [`executor`] builds it.
    fn line() -> usize {
        OK.lines().count() + 2
    }

    #[test]
    fn local_is_the_default() {
        let c = WatchConfig::parse(OK, Path::new("/c/w.toml")).expect("valid");
        assert_eq!(c.executor, Executor::Local);
        assert_eq!(executor(""), Executor::Local);
        assert_eq!(executor("kind = \"local\""), Executor::Local);
    }

    #[test]
    fn slurm_keys_and_defaults() {
        let Executor::Slurm(s) = executor("kind = \"slurm\"") else {
            panic!("slurm")
        };
        assert_eq!(s, SlurmSettings::defaults(PathBuf::from("/c/slurm")));
        let Executor::Slurm(s) = executor(
            "kind = \"slurm\"\npartition = \"gpu\"\ngres = \"gpu:1\"\ntime = \"02:00:00\"\n\
             account = \"lm\"\nmax_jobs = 8\nextra = [\"--qos=high\", \"--comment=team-a\"]\n\
             worker_idle_secs = 2.5\nlogs = \"/var/log/fm\"",
        ) else {
            panic!("slurm")
        };
        assert_eq!(
            s,
            SlurmSettings {
                partition: Some("gpu".into()),
                gres: Some("gpu:1".into()),
                time: Some("02:00:00".into()),
                account: Some("lm".into()),
                max_jobs: 8,
                extra: vec!["--qos=high".into(), "--comment=team-a".into()],
                worker_idle: Duration::from_millis(2500),
                logs: PathBuf::from("/var/log/fm"),
            }
        );
        // Relative to the config file; an empty gres asks for none.
        let Executor::Slurm(s) = executor("kind = \"slurm\"\nlogs = \"out/slurm\"\ngres = \"\"")
        else {
            panic!("slurm")
        };
        assert_eq!(s.logs, Path::new("/c/out/slurm"));
        assert_eq!(s.gres, None);
    }

    #[test]
    fn errors_name_line_and_key() {
        let at = |table: &str| err(&format!("{OK}[executor]\n{table}\n"));
        let l = line();
        for (table, want) in [
            (
                "kind = \"pbs\"".to_string(),
                format!("w.toml:{l}: executor.kind: unknown variant `pbs`"),
            ),
            (
                "kind = \"local\"\npartition = \"gpu\"".into(),
                format!(
                    "w.toml:{}: executor.partition: only used with kind = \"slurm\"",
                    l + 1
                ),
            ),
            (
                "worker_idle_secs = 3".into(),
                format!("w.toml:{l}: executor.worker_idle_secs: only used with kind = \"slurm\""),
            ),
            (
                "kind = \"slurm\"\nmax_jobs = 0".into(),
                format!("w.toml:{}: executor.max_jobs: must be at least 1", l + 1),
            ),
            (
                "kind = \"slurm\"\nmax_jobs = 1.5".into(),
                format!("w.toml:{}: executor.max_jobs: invalid type", l + 1),
            ),
            (
                "kind = \"slurm\"\nworker_idle_secs = 0".into(),
                format!(
                    "w.toml:{}: executor.worker_idle_secs: must be a number of seconds > 0",
                    l + 1
                ),
            ),
            (
                "kind = \"slurm\"\nextra = [\"--qos=high\", \"qos=low\"]".into(),
                format!(
                    "w.toml:{}: executor.extra[1]: must be an sbatch option",
                    l + 1
                ),
            ),
            (
                "kind = \"slurm\"\npartition = \"\"".into(),
                format!("w.toml:{}: executor.partition: is empty", l + 1),
            ),
            (
                "kind = \"slurm\"\naccount = \"a\\nb\"".into(),
                format!("w.toml:{}: executor.account: must be on one line", l + 1),
            ),
            (
                "kind = \"slurm\"\nqueue = \"x\"".into(),
                format!("w.toml:{}: executor.queue: unknown field `queue`", l + 1),
            ),
        ] {
            let e = at(&table);
            assert!(e.starts_with(&want), "{e}\nwant: {want}");
        }
    }
}
