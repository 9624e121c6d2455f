//! The demo's output folder: what may be written into, and what `--force` removes.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::Context;
use serde_json::json;

use crate::error::input_error;

/// Marks a folder as a demo's; `--force` only ever replaces folders that carry it.
pub const MARKER: &str = "filtermon-demo.json";

/// The corpus splits (`train.jsonl`, `eval.jsonl`).
pub const CORPUS: &str = "corpus";
/// The trained byte-level BPE.
pub const TOKENIZER: &str = "tokenizer.json";
/// The prepared evalset.
pub const EVALSET: &str = "evalset";
/// The planted-repeat probe evalset.
pub const PROBE: &str = "probe";
/// One folder of checkpoint folders per run.
pub const RUNS: &str = "runs";
/// The watch config the embedded daemon runs on.
pub const CONFIG: &str = "watch.toml";
/// The monitor's SQLite store.
pub const DB: &str = "filtermon.db";
/// Where the daemon draws charts.
pub const CHARTS: &str = "charts";

/// Everything a demo writes at the top of its folder (SQLite adds the `-wal` and `-shm`
/// files beside the db).
const ENTRIES: [&str; 11] = [
    MARKER,
    CORPUS,
    TOKENIZER,
    EVALSET,
    PROBE,
    RUNS,
    CONFIG,
    DB,
    "filtermon.db-wal",
    "filtermon.db-shm",
    CHARTS,
];

/// Makes `out` ready for a demo of kind `plan`: creates it when absent; accepts it empty;
/// replaces an earlier demo's files with `force`; refuses anything else. Then marks it.
///
/// # Errors
///
/// [`InputError`](crate::error::InputError)s (exit 2) for a path that is not a folder, a folder
/// holding other files, an earlier demo without `force`, or a folder that cannot be written.
pub fn prepare(out: &Path, plan: &str, force: bool) -> anyhow::Result<()> {
    let shown = out.display();
    match fs::read_dir(out) {
        Ok(mut entries) => {
            let empty = entries.next().is_none();
            if !empty {
                if !out.join(MARKER).is_file() {
                    return Err(input_error(format!(
                        "{shown}: not empty and not a filtermon demo folder; pick another --out"
                    )));
                }
                if !force {
                    return Err(input_error(format!(
                        "{shown}: holds an earlier demo; pass --force to replace it or pick another --out"
                    )));
                }
                clear(out)?;
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => fs::create_dir_all(out)
            .map_err(|e| input_error(format!("{shown}: cannot create the folder: {e}")))?,
        Err(e) if out.exists() && !out.is_dir() => {
            return Err(input_error(format!(
                "{shown}: exists and is not a folder ({e})"
            )))
        }
        Err(e) => return Err(input_error(format!("{shown}: cannot read the folder: {e}"))),
    }
    let marker = json!({"filtermon_demo": plan, "version": env!("CARGO_PKG_VERSION")});
    fs::write(out.join(MARKER), format!("{marker}\n"))
        .map_err(|e| input_error(format!("{shown}: cannot write into the folder: {e}")))?;
    Ok(())
}

/// Removes the files an earlier demo wrote, and nothing else.
fn clear(out: &Path) -> anyhow::Result<()> {
    tracing::info!(folder = %out.display(), "replacing an earlier demo");
    for name in ENTRIES {
        let path = out.join(name);
        let removed = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => Err(e),
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::is_input_error;

    #[test]
    fn absent_and_empty_folders_are_taken_and_marked() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let fresh = tmp.path().join("a/b");
        prepare(&fresh, "quick", false)?;
        assert!(fresh.join(MARKER).is_file());
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty)?;
        prepare(&empty, "full", false)?;
        assert!(fs::read_to_string(empty.join(MARKER))?.contains("\"full\""));
        Ok(())
    }

    #[test]
    fn foreign_files_are_refused_even_with_force() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        fs::write(tmp.path().join("notes.txt"), "mine")?;
        for force in [false, true] {
            let err = prepare(tmp.path(), "quick", force).err();
            assert!(err.as_ref().is_some_and(is_input_error), "{err:?}");
        }
        assert!(tmp.path().join("notes.txt").is_file());
        let file = tmp.path().join("notes.txt");
        let err = prepare(&file, "quick", true).err();
        assert!(err.as_ref().is_some_and(is_input_error), "{err:?}");
        Ok(())
    }

    #[test]
    fn an_earlier_demo_needs_force_which_keeps_other_files() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let out = tmp.path();
        prepare(out, "quick", false)?;
        fs::create_dir_all(out.join(RUNS).join("gdn/step4"))?;
        fs::write(out.join(DB), "db")?;
        fs::write(out.join("mine.txt"), "kept")?;
        let err = prepare(out, "quick", false).err();
        assert!(err.as_ref().is_some_and(is_input_error), "{err:?}");
        assert!(out.join(DB).is_file());
        prepare(out, "full", true)?;
        assert!(!out.join(RUNS).exists() && !out.join(DB).exists());
        assert!(out.join("mine.txt").is_file() && out.join(MARKER).is_file());
        Ok(())
    }
}
