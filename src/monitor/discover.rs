//! Finding a run's checkpoint folders and deciding when each is ready (DESIGN §7).
//!
//! A folder is a checkpoint when its name matches the run's `checkpoints` pattern and does
//! not end in `-tmp` (OLMo-core writes `stepN-tmp` and renames it when complete). It is
//! *ready* when it is complete and its files have settled: unchanged in size and mtime for the
//! settle period, either observed here or shown by their mtimes. Complete means, for a Hugging
//! Face folder, `config.json` plus `model.safetensors` or every shard that
//! `model.safetensors.index.json` names; for an OLMo-core step folder (`model_and_optim/`),
//! what [`olmo_core::is_complete`] checks. When the run has an inbox, a `step-N.ready.json`
//! event replaces the settle test: only announced checkpoints are ready, as soon as they are
//! complete.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::engine::checkpoint::olmo_core;
use crate::monitor::config::{RunConfig, ScoreWhich};

/// A checkpoint folder found ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Folder name, unique within the run.
    pub name: String,
    /// Folder path.
    pub path: PathBuf,
    /// Training step.
    pub step: u64,
    /// Annealed (true) or stable.
    pub anneal: bool,
}

/// What a scan of one run found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Checkpoints that became ready.
    pub ready: Vec<Found>,
    /// When a settling checkpoint may next become ready.
    pub next_check: Option<Instant>,
}

/// Size and mtime of every file of a folder, by name.
type Fingerprint = Vec<(String, u64, SystemTime)>;

/// Remembers what earlier scans saw, to tell settled folders from ones still being written.
#[derive(Debug)]
pub struct Discoverer {
    settle: Duration,
    seen: HashMap<PathBuf, (Fingerprint, Instant)>,
}

impl Discoverer {
    /// A discoverer with the given settle period.
    pub fn new(settle: Duration) -> Self {
        Discoverer {
            settle,
            seen: HashMap::new(),
        }
    }

    /// Scans one run; `known` are checkpoint names already recorded (skipped).
    pub fn scan(&mut self, run: &RunConfig, known: &HashSet<String>) -> Scan {
        let mut scan = Scan::default();
        let announced = run.inbox.as_deref().map(|i| read_inbox(i, &run.dir));
        for (name, path, step) in candidates(run, announced.as_ref()) {
            let anneal = run.anneal.is_anneal(&name);
            if known.contains(&name) || (run.score == ScoreWhich::Anneal && !anneal) {
                continue;
            }
            if !is_complete(&path) {
                continue;
            }
            let found = Found {
                name,
                path,
                step,
                anneal,
            };
            if announced.is_some() {
                // The writer vouched for it: no settle period.
                scan.ready.push(found);
                continue;
            }
            match self.settled(&found.path) {
                Ok(()) => scan.ready.push(found),
                Err(Some(at)) => {
                    scan.next_check = Some(scan.next_check.map_or(at, |n: Instant| n.min(at)))
                }
                Err(None) => {}
            }
        }
        for f in &scan.ready {
            self.seen.remove(&f.path);
        }
        scan
    }

    /// Ok when the folder's files have not changed for the settle period; otherwise when
    /// that could next be true (None when the folder cannot be read).
    fn settled(&mut self, dir: &Path) -> Result<(), Option<Instant>> {
        let fp = fingerprint(dir).ok_or(None)?;
        let now = Instant::now();
        let since = match self.seen.get(dir) {
            Some((old, since)) if *old == fp => *since,
            _ => now,
        };
        let newest = fp.iter().map(|(_, _, m)| *m).max();
        self.seen.insert(dir.to_path_buf(), (fp, since));
        let observed = now.duration_since(since);
        let quiet = newest
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or(Duration::ZERO);
        if observed.max(quiet) >= self.settle {
            Ok(())
        } else {
            Err(Some(now + self.settle - observed.max(quiet)))
        }
    }
}

/// `(name, path, step)` of the folders of a run that may be checkpoints: matching the
/// pattern (and announced, when `announced` is given).
fn candidates(
    run: &RunConfig,
    announced: Option<&HashMap<u64, Option<PathBuf>>>,
) -> Vec<(String, PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&run.dir) else {
        tracing::debug!(run = %run.name, dir = %run.dir.display(), "run folder not readable yet");
        return out;
    };
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.ends_with("-tmp") {
            continue;
        }
        let Some(step) = run.checkpoints.captures(&name).and_then(|c| {
            c.name("step")
                .or_else(|| c.get(1))
                .and_then(|m| m.as_str().parse::<u64>().ok())
        }) else {
            continue;
        };
        let path = entry.path();
        let listed = match announced {
            None => true,
            Some(a) => match a.get(&step) {
                Some(Some(p)) => *p == path,
                Some(None) => true,
                None => false,
            },
        };
        // `metadata` follows symlinks: a linked checkpoint folder counts.
        if listed && std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            out.push((name, path, step));
        }
    }
    if let Some(a) = announced {
        // Announced folders need not match the pattern.
        for (step, p) in a {
            if let Some(p) = p {
                let name = p.file_name().and_then(|n| n.to_str()).map(str::to_string);
                if let Some(name) = name.filter(|n| !n.ends_with("-tmp")) {
                    if p.is_dir() && !out.iter().any(|(_, q, _)| q == p) {
                        out.push((name, p.clone(), *step));
                    }
                }
            }
        }
    }
    out
}

/// Steps announced in an inbox (`step-N.ready.json`), each with the folder it names, if any.
fn read_inbox(inbox: &Path, base: &Path) -> HashMap<u64, Option<PathBuf>> {
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(inbox) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.strip_suffix(".ready.json"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        // The event may name the folder: `{"path": "step100-hf"}`, relative to the run
        // folder. A half-written event counts as naming none.
        let path = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("path").and_then(|p| p.as_str()).map(|p| base.join(p)));
        out.insert(step, path);
    }
    out
}

/// Whether the folder holds a whole checkpoint, in either format.
fn is_complete(dir: &Path) -> bool {
    if olmo_core::is_native(dir) {
        return olmo_core::is_complete(dir);
    }
    if !dir.join("config.json").is_file() {
        return false;
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        // An index that does not parse is left to the loader, which reports it.
        match crate::engine::checkpoint::shard_files(&index) {
            Ok(_) => true,
            Err(e) => !e.to_string().contains("is missing"),
        }
    } else {
        dir.join("model.safetensors").is_file()
    }
}

fn fingerprint(dir: &Path) -> Option<Fingerprint> {
    let mut fp: Fingerprint = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let m = std::fs::metadata(e.path()).ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name, m.len(), m.modified().ok()?))
        })
        .collect();
    fp.sort();
    Some(fp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::config::WatchConfig;

    fn run(dir: &Path, extra: &str) -> RunConfig {
        let text = format!(
            "db = \"m.db\"\n[[evalsets]]\nname = \"e\"\ndir = \"e\"\n[[runs]]\nname = \"r\"\n\
             arch = \"rnn\"\ndir = {:?}\ntokens_per_step = 2\n{extra}",
            dir
        );
        WatchConfig::parse(&text, Path::new("w.toml"))
            .expect("config")
            .runs
            .remove(0)
    }

    fn hf(dir: &Path) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join("config.json"), "{}").expect("write");
        std::fs::write(dir.join("model.safetensors"), "x").expect("write");
    }

    #[test]
    fn tmp_incomplete_and_unsettled_folders_wait() {
        let tmp = tempfile::tempdir().expect("tmp");
        let r = run(tmp.path(), "");
        hf(&tmp.path().join("step10-tmp"));
        std::fs::create_dir_all(tmp.path().join("step20")).expect("mkdir");
        std::fs::write(tmp.path().join("step20/config.json"), "{}").expect("write");
        hf(&tmp.path().join("step30-anneal"));
        hf(&tmp.path().join("notes"));
        let mut d = Discoverer::new(Duration::from_secs(3600));
        let s = d.scan(&r, &HashSet::new());
        assert!(s.ready.is_empty());
        assert!(s.next_check.is_some());
        let mut d = Discoverer::new(Duration::ZERO);
        let s = d.scan(&r, &HashSet::new());
        assert_eq!(s.ready.len(), 1);
        assert_eq!((s.ready[0].step, s.ready[0].anneal), (30, true));
        let known: HashSet<String> = ["step30-anneal".to_string()].into();
        assert!(d.scan(&r, &known).ready.is_empty());
    }

    #[test]
    fn inbox_announces() {
        let tmp = tempfile::tempdir().expect("tmp");
        let r = run(tmp.path(), "inbox = \"inbox\"");
        hf(&tmp.path().join("step10"));
        hf(&tmp.path().join("step20"));
        std::fs::create_dir_all(tmp.path().join("inbox")).expect("mkdir");
        let mut d = Discoverer::new(Duration::from_secs(3600));
        assert!(d.scan(&r, &HashSet::new()).ready.is_empty());
        std::fs::write(tmp.path().join("inbox/step-20.ready.json"), "{}").expect("write");
        let s = d.scan(&r, &HashSet::new());
        assert_eq!(s.ready.iter().map(|f| f.step).collect::<Vec<_>>(), [20]);
    }

    #[test]
    fn sharded_folder_waits_for_every_shard() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("step1");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.json"), "{}").expect("write");
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}"#,
        )
        .expect("write");
        std::fs::write(dir.join("s1.safetensors"), "x").expect("write");
        assert!(!is_complete(&dir));
        std::fs::write(dir.join("s2.safetensors"), "x").expect("write");
        assert!(is_complete(&dir));
        std::fs::write(dir.join("model.safetensors.index.json"), "{not json").expect("write");
        assert!(is_complete(&dir));
    }

    #[test]
    fn native_step_folders_are_found_once_complete() {
        let tmp = tempfile::tempdir().expect("tmp");
        let r = run(tmp.path(), "");
        let native = |name: &str| {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(dir.join("model_and_optim")).expect("mkdir");
            std::fs::write(dir.join(".metadata.json"), "{}").expect("write");
            // A pickle ends with STOP (`.`); a cut-short index does not.
            std::fs::write(dir.join("model_and_optim/.metadata"), b"\x80\x02N").expect("write");
            dir
        };
        let mut d = Discoverer::new(Duration::ZERO);
        let (step5, step6) = (native("step5"), native("step6-tmp"));
        assert!(d.scan(&r, &HashSet::new()).ready.is_empty());
        for dir in [&step5, &step6] {
            std::fs::write(dir.join("model_and_optim/.metadata"), b"\x80\x02N.").expect("write");
        }
        assert!(
            d.scan(&r, &HashSet::new()).ready.is_empty(),
            "no config.json yet"
        );
        for dir in [&step5, &step6] {
            std::fs::write(dir.join("config.json"), "{}").expect("write");
        }
        let s = d.scan(&r, &HashSet::new());
        assert_eq!(s.ready.iter().map(|f| f.step).collect::<Vec<_>>(), [5]);
    }
}
