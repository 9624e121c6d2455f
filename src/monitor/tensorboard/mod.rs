//! The stored results as TensorBoard scalars: `export --format tensorboard` writes a store's at
//! once ([`export`]), and the watch daemon appends each result as it is committed
//! ([`Appender`]).
//!
//! Layout under the root folder (`tensorboard --logdir ROOT`): `<run>/` holds a run's stable
//! checkpoints and `<run>/anneal/` its annealed ones, each folder a TensorBoard run. Tags are
//! `filtermon/<evalset>/<filter>` (the mean NLL) and `filtermon/<evalset>/<filter>/gap` (the
//! paired gap to the baseline, where there is one); results whose mean is NULL are skipped.
//! Annealed checkpoints get a run of their own because an annealed checkpoint sits below the
//! stable curve by the decay's gain: on one line the two kinds would zigzag, and a stable and an
//! annealed checkpoint at the same tokens would share a step. Each event's wall time is the
//! result's `scored_at`.

pub mod event_file;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::{input_error, one_line};
use crate::monitor::charts::XAxis;
use crate::store::jobs::hostname;
use crate::store::report::ResultRow;
use crate::store::{now, Store};
use event_file::{own_files, read_scalars, EventFile, Scalar};

/// The folder of a run's stable (or annealed) checkpoints under `root`. The run's name is one
/// folder name, with `/`, `\`, `%` and control characters percent-encoded (and `%` put before
/// an empty name, `.` and `..`), so that no name reaches outside `root` or into another run's
/// folder.
pub fn folder(root: &Path, run: &str, anneal: bool) -> PathBuf {
    let mut name = String::with_capacity(run.len());
    for c in run.chars() {
        if matches!(c, '/' | '\\' | '%') || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                name.push_str(&format!("%{b:02X}"));
            }
        } else {
            name.push(c);
        }
    }
    if matches!(name.as_str(), "" | "." | "..") {
        name.insert(0, '%');
    }
    let dir = root.join(name);
    if anneal {
        dir.join("anneal")
    } else {
        dir
    }
}

/// A result's scalars at tokens seen or at the training step: its mean, and its paired gap
/// where there is one; none when its mean is NULL (no token passed the filter).
pub fn scalars(row: &ResultRow, x: XAxis) -> Vec<Scalar> {
    let Some(mean) = row.mean else {
        return Vec::new();
    };
    let step = match x {
        XAxis::Tokens => row.tokens,
        XAxis::Step => row.step,
    };
    // The store keeps both as SQLite integers, so they fit.
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    let tag = format!("filtermon/{}/{}", row.evalset, row.filter);
    let gap_tag = format!("{tag}/gap");
    [(tag, Some(mean)), (gap_tag, row.gap)]
        .into_iter()
        .filter_map(|(tag, value)| {
            Some(Scalar {
                wall_time: row.scored_at,
                step,
                tag,
                value: value? as f32,
            })
        })
        .collect()
}

/// The scalars of `rows` by the folder they go to, in row order.
fn by_folder<'a>(
    root: &Path,
    rows: impl Iterator<Item = &'a ResultRow>,
    x: XAxis,
) -> BTreeMap<PathBuf, Vec<Scalar>> {
    let mut out: BTreeMap<PathBuf, Vec<Scalar>> = BTreeMap::new();
    for row in rows {
        let points = scalars(row, x);
        if !points.is_empty() {
            let dir = folder(root, &row.run, row.kind == "anneal");
            out.entry(dir).or_default().extend(points);
        }
    }
    out
}

/// Writes `rows` under `root`, one new event file per TensorBoard run folder; returns the
/// files written.
///
/// # Errors
///
/// An [`InputError`](crate::error::InputError) when `root` cannot be created, or when a folder
/// it would write already holds filtermon event files (an earlier export's or a watch
/// daemon's): its points would show twice. Nothing is written then.
pub fn export(rows: &[ResultRow], root: &Path, x: XAxis) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(root)
        .map_err(|e| input_error(format!("{}: cannot create folder: {e}", root.display())))?;
    let folders = by_folder(root, rows.iter(), x);
    for dir in folders.keys() {
        if let Some(file) = own_files(dir)?.first() {
            return Err(input_error(format!(
                "{}: already holds filtermon event files ({}); export into an empty folder",
                dir.display(),
                file.file_name().unwrap_or_default().to_string_lossy()
            )));
        }
    }
    let (host, t) = (hostname(), now());
    let mut files = Vec::with_capacity(folders.len());
    for (dir, points) in folders {
        let mut file = EventFile::create(&dir, t, &host)?;
        file.append(&points)?;
        files.push(file.path().to_path_buf());
    }
    Ok(files)
}

/// What identifies a point in a folder: tag, step and wall time. The wall time is the result's
/// `scored_at`, an f64 kept exactly by both the store and the event file, and different for
/// each commit; so two checkpoints at the same step (`step100`, `step100-hf`) stay two points.
type Key = (String, i64, u64);

fn key(s: &Scalar) -> Key {
    (s.tag.clone(), s.step, s.wall_time.to_bits())
}

/// The points of every filtermon event file in `dir`, as TensorBoard reads them.
fn points_in(dir: &Path) -> anyhow::Result<HashSet<Key>> {
    let mut keys = HashSet::new();
    for path in own_files(dir)? {
        let bytes =
            std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let points = read_scalars(&bytes).with_context(|| path.display().to_string())?;
        keys.extend(points.iter().map(key));
    }
    Ok(keys)
}

/// Appends the watch daemon's results to event files as they are committed, at tokens seen.
///
/// Crash-safe without duplicates, by this design:
///
/// - Each appender (one per daemon start) writes a new event file per folder, created when the
///   folder first has a point to write, and never writes to an older file. A crash can tear
///   only the tail of its own file, which TensorBoard skips before reading the folder's next
///   file; appending after a torn record would hide every later record.
/// - Before its first write to a folder it reads the filtermon event files already there, up to
///   any torn record as TensorBoard does, and from then on writes only the points they lack
///   (by tag, step and wall time). So what was committed while nothing appended (a crash
///   between commit and append, a torn tail, a daemon started without the key, the results
///   from before the key was set) is written at the next start, and nothing twice.
/// - Each call's new points go out in one write, flushed; after a failed write the folder's
///   file is dropped and the folder read again before its next write, so that whatever of
///   the failed write landed is not written again.
///
/// Two daemons should not append to the same folder: each would write what the other did.
pub struct Appender {
    root: PathBuf,
    runs: Vec<String>,
    host: String,
    folders: HashMap<PathBuf, Folder>,
}

/// A folder this appender has read: its points, and its new file once one is made.
struct Folder {
    points: HashSet<Key>,
    file: Option<EventFile>,
}

impl Appender {
    /// An appender of `runs`' results under `root`; reads and writes nothing yet.
    pub fn new(root: PathBuf, runs: Vec<String>) -> Appender {
        Appender {
            root,
            runs,
            host: hostname(),
            folders: HashMap::new(),
        }
    }

    /// Writes the points of the runs' results in `store` that the event files lack, and
    /// returns how many. A folder that cannot be read or written is logged (`tracing::error`)
    /// and tried again on the next call; the error returned is the store's.
    pub fn append(&mut self, store: &Store) -> anyhow::Result<usize> {
        let rows = store.results(None)?;
        let mine = rows.iter().filter(|r| self.runs.contains(&r.run));
        let mut written = 0;
        for (dir, points) in by_folder(&self.root, mine, XAxis::Tokens) {
            match self.append_to(&dir, points) {
                Ok(n) => written += n,
                Err(e) => {
                    self.folders.remove(&dir);
                    tracing::error!(folder = %dir.display(), error = %one_line(&e),
                        "writing TensorBoard scalars; will try again after the next commit");
                }
            }
        }
        Ok(written)
    }

    fn append_to(&mut self, dir: &Path, points: Vec<Scalar>) -> anyhow::Result<usize> {
        let folder = match self.folders.entry(dir.to_path_buf()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Folder {
                points: points_in(dir)?,
                file: None,
            }),
        };
        let new: Vec<Scalar> = points
            .into_iter()
            .filter(|s| !folder.points.contains(&key(s)))
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        let file = match &mut folder.file {
            Some(file) => file,
            None => folder
                .file
                .insert(EventFile::create(dir, now(), &self.host)?),
        };
        file.append(&new)?;
        folder.points.extend(new.iter().map(key));
        Ok(new.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::paired_gaps::{self, TokenSets};
    use crate::store::testing;

    fn row(run: &str, kind: &str, filter: &str, mean: Option<f64>, gap: Option<f64>) -> ResultRow {
        ResultRow {
            run: run.into(),
            arch: "hybrid".into(),
            step: 7,
            tokens: 7000,
            kind: kind.into(),
            checkpoint: "step7".into(),
            evalset: "web".into(),
            filter: filter.into(),
            mean,
            n: 10,
            ci_lo: None,
            ci_hi: None,
            top1: None,
            top5: None,
            scored_at: 1.7e9,
            gap,
            gap_ci_lo: None,
            gap_ci_hi: None,
            checkpoint_id: 1,
        }
    }

    #[test]
    fn a_result_is_its_mean_and_gap_at_tokens_or_step_and_a_null_mean_is_skipped() {
        let both = row("hy", "stable", "copy5", Some(2.5), Some(-0.125));
        let got = scalars(&both, XAxis::Tokens);
        let tags: Vec<(&str, i64, f32)> = got
            .iter()
            .map(|s| (s.tag.as_str(), s.step, s.value))
            .collect();
        assert_eq!(
            tags,
            [
                ("filtermon/web/copy5", 7000, 2.5),
                ("filtermon/web/copy5/gap", 7000, -0.125)
            ]
        );
        assert!(got.iter().all(|s| s.wall_time == 1.7e9));
        assert_eq!(scalars(&both, XAxis::Step)[0].step, 7);
        assert!(scalars(
            &row("hy", "stable", "copy5", None, Some(0.5)),
            XAxis::Tokens
        )
        .is_empty());
        assert_eq!(
            scalars(&row("hy", "stable", "all", Some(3.0), None), XAxis::Tokens).len(),
            1
        );
    }

    #[test]
    fn run_folders_stay_inside_the_root_and_apart() {
        let root = Path::new("/tb");
        assert_eq!(folder(root, "hybrid", false), Path::new("/tb/hybrid"));
        assert_eq!(folder(root, "hybrid", true), Path::new("/tb/hybrid/anneal"));
        assert_eq!(folder(root, "olmo/1b", false), Path::new("/tb/olmo%2F1b"));
        assert_eq!(folder(root, "a/anneal", false), Path::new("/tb/a%2Fanneal"));
        assert_eq!(folder(root, "..", false), Path::new("/tb/%.."));
        assert_eq!(folder(root, "", false), Path::new("/tb/%"));
        assert_eq!(folder(root, "50%", false), Path::new("/tb/50%25"));
        assert_eq!(folder(root, "a\\b\n", false), Path::new("/tb/a%5Cb%0A"));
    }

    /// Every point of the filtermon event files under `dir`'s run folders, sorted.
    fn read_back(dir: &Path) -> Vec<(String, i64, f32)> {
        let mut out = Vec::new();
        for path in own_files(dir).expect("list") {
            let bytes = std::fs::read(path).expect("read");
            for s in read_scalars(&bytes).expect("scalars") {
                out.push((s.tag, s.step, s.value));
            }
        }
        out.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        out
    }

    #[test]
    fn the_appender_writes_each_point_once_across_restarts_torn_tails_and_failed_writes() {
        let (tmp, mut store, es) = testing::store(4);
        let base = testing::run(&mut store, "tr", None);
        let run = testing::run(&mut store, "hy", Some("tr"));
        let other = testing::run(&mut store, "not-watched", None);
        let root = tmp.path().join("tb");
        let runs = vec!["tr".to_string(), "hy".to_string()];
        let sets: HashMap<i64, TokenSets> = [(
            es,
            TokenSets::from_parts(
                vec![0, 0, 1, 1],
                2,
                vec![("all".into(), vec![false, true, true, true])],
            ),
        )]
        .into();

        let mut appender = Appender::new(root.clone(), runs.clone());
        testing::scored(&mut store, run, es, 10, false, &[0.0, 2.0, 3.0, 4.0]);
        testing::scored(&mut store, other, es, 10, false, &[0.0, 1.0, 1.0, 1.0]);
        assert_eq!(appender.append(&store).expect("append"), 1);
        assert_eq!(appender.append(&store).expect("again"), 0);
        assert!(!folder(&root, "not-watched", false).exists());

        // The baseline's checkpoint at the same tokens brings its mean and the run's gap.
        testing::scored(&mut store, base, es, 10, false, &[0.0, 1.0, 2.0, 3.0]);
        testing::scored(&mut store, base, es, 20, true, &[0.0, 1.0, 1.0, 1.0]);
        paired_gaps::update(&mut store, &sets, 10, 0).expect("gaps");
        assert_eq!(appender.append(&store).expect("append"), 3);
        let hy = folder(&root, "hy", false);
        assert_eq!(
            read_back(&hy),
            [
                ("filtermon/e/all".into(), 100, 3.0),
                ("filtermon/e/all/gap".into(), 100, 1.0)
            ]
        );
        assert_eq!(
            read_back(&folder(&root, "tr", true)),
            [("filtermon/e/all".into(), 200, 1.0)]
        );

        // A restart writes nothing the files hold, and makes no file with nothing to write.
        drop(appender);
        let mut restarted = Appender::new(root.clone(), runs.clone());
        assert_eq!(restarted.append(&store).expect("append"), 0);
        assert_eq!(own_files(&hy).expect("list").len(), 1);

        // A torn tail (a crash mid-write) loses only what the next start writes again.
        let file = own_files(&hy).expect("list").remove(0);
        let bytes = std::fs::read(&file).expect("read");
        std::fs::write(&file, &bytes[..bytes.len() - 5]).expect("tear");
        let mut restarted = Appender::new(root.clone(), runs.clone());
        assert_eq!(restarted.append(&store).expect("append"), 1);
        assert_eq!(own_files(&hy).expect("list").len(), 2);
        assert_eq!(read_back(&hy).len(), 2);

        // A folder that cannot be written is retried on the next call.
        std::fs::write(folder(&root, "hy", true), "in the way").expect("block");
        testing::scored(&mut store, run, es, 20, true, &[0.0, 2.0, 2.0, 2.0]);
        paired_gaps::update(&mut store, &sets, 10, 0).expect("gaps");
        assert_eq!(restarted.append(&store).expect("append"), 0);
        std::fs::remove_file(folder(&root, "hy", true)).expect("unblock");
        assert_eq!(restarted.append(&store).expect("append"), 2);
        assert_eq!(
            read_back(&folder(&root, "hy", true)),
            [
                ("filtermon/e/all".into(), 200, 2.0),
                ("filtermon/e/all/gap".into(), 200, 1.0)
            ]
        );
    }

    #[test]
    fn export_writes_a_file_per_folder_and_refuses_to_write_twice() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("tb");
        let rows = [
            row("hy", "stable", "all", Some(3.0), Some(0.5)),
            row("hy", "anneal", "all", Some(2.0), None),
            row("hy", "stable", "copy5", None, None),
        ];
        let files = export(&rows, &root, XAxis::Tokens).expect("export");
        assert_eq!(files.len(), 2);
        assert_eq!(read_back(&folder(&root, "hy", false)).len(), 2);
        let e = export(&rows, &root, XAxis::Tokens).expect_err("twice");
        assert!(crate::error::is_input_error(&e));
        assert!(
            one_line(&e).contains("already holds filtermon event files"),
            "{e}"
        );
        assert_eq!(
            own_files(&folder(&root, "hy", true)).expect("list").len(),
            1
        );
    }
}
