//! The sbatch script of a config's worker jobs, and the job name that ties them to the config.

use std::borrow::Cow;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::monitor::config::SlurmSettings;

/// The Slurm job name of a config's workers: `filtermon-` and the first 12 hex digits of the
/// SHA-256 of the config's absolute path. A restarted daemon finds its own jobs by it, and two
/// daemons of different configs never count each other's.
pub fn job_name(config: &Path) -> String {
    let digest = Sha256::digest(config.as_os_str().as_encoded_bytes());
    format!("filtermon-{}", &hex::encode(digest)[..12])
}

/// What a worker job runs and where it writes.
pub struct ScriptSpec<'a> {
    /// The job name ([`job_name`]).
    pub job_name: &'a str,
    /// The `[executor]` settings.
    pub settings: &'a SlurmSettings,
    /// The absolute path of the filtermon executable.
    pub exe: &'a Path,
    /// Options before `worker` (the log format).
    pub worker_args: &'a [String],
    /// The absolute path of the watch config.
    pub config: &'a Path,
}

/// The sbatch script: the job's options as `#SBATCH` lines, then the worker. `--export=ALL`
/// gives the worker the daemon's environment (`SLURM_CONF`, `RUST_LOG`, a store password).
pub fn script(spec: &ScriptSpec) -> String {
    let s = spec.settings;
    let output = s.logs.join("worker-%j.out");
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name={}", spec.job_name),
        format!("#SBATCH --output={}", quote(&output.to_string_lossy())),
    ];
    for (option, value) in [
        ("partition", &s.partition),
        ("gres", &s.gres),
        ("time", &s.time),
        ("account", &s.account),
    ] {
        if let Some(v) = value {
            lines.push(format!("#SBATCH --{option}={}", quote(v)));
        }
    }
    lines.extend(s.extra.iter().map(|e| format!("#SBATCH {e}")));
    lines.push("#SBATCH --export=ALL".into());
    let mut exec = vec![quote(&spec.exe.to_string_lossy()).into_owned()];
    exec.extend(spec.worker_args.iter().map(|a| quote(a).into_owned()));
    exec.extend([
        "worker".into(),
        "--config".into(),
        quote(&spec.config.to_string_lossy()).into_owned(),
    ]);
    lines.push(format!("exec {}", exec.join(" ")));
    lines.join("\n") + "\n"
}

/// `s` as one shell word: as it is when it has nothing the shell (or sbatch, which reads
/// `#SBATCH` lines as words) would split or expand, else in single quotes.
fn quote(s: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::time::Duration;

    fn settings() -> SlurmSettings {
        SlurmSettings::defaults(PathBuf::from("/c/slurm"))
    }

    #[test]
    fn the_job_name_is_a_hash_of_the_config_path() {
        let a = job_name(Path::new("/etc/fm/w.toml"));
        assert_eq!(a, job_name(Path::new("/etc/fm/w.toml")));
        assert_ne!(a, job_name(Path::new("/etc/fm/x.toml")));
        assert_eq!(a.len(), "filtermon-".len() + 12);
        assert!(a["filtermon-".len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        // SHA-256 of the path's bytes, so that any build finds the jobs of an earlier one.
        assert_eq!(job_name(Path::new("")), "filtermon-e3b0c44298fc");
    }

    #[test]
    fn a_minimal_script() {
        let settings = settings();
        let text = script(&ScriptSpec {
            job_name: "filtermon-0123456789ab",
            settings: &settings,
            exe: Path::new("/opt/fm/bin/filtermon"),
            worker_args: &[],
            config: Path::new("/c/w.toml"),
        });
        assert_eq!(
            text,
            "#!/bin/bash\n\
             #SBATCH --job-name=filtermon-0123456789ab\n\
             #SBATCH --output=/c/slurm/worker-%j.out\n\
             #SBATCH --export=ALL\n\
             exec /opt/fm/bin/filtermon worker --config /c/w.toml\n"
        );
    }

    #[test]
    fn every_key_has_its_line_and_odd_paths_are_quoted() {
        let settings = SlurmSettings {
            partition: Some("gpu".into()),
            gres: Some("gpu:1".into()),
            time: Some("02:00:00".into()),
            account: Some("lm research".into()),
            max_jobs: 2,
            extra: vec!["--qos=high".into(), "--comment=team-a".into()],
            worker_idle: Duration::from_secs(3),
            logs: PathBuf::from("/shared/fm logs"),
        };
        let text = script(&ScriptSpec {
            job_name: "filtermon-0123456789ab",
            settings: &settings,
            exe: Path::new("/opt/fm/bin/filtermon"),
            worker_args: &["--log-format".into(), "json".into()],
            config: Path::new("/home/o'neil/w.toml"),
        });
        assert_eq!(
            text,
            "#!/bin/bash\n\
             #SBATCH --job-name=filtermon-0123456789ab\n\
             #SBATCH --output='/shared/fm logs/worker-%j.out'\n\
             #SBATCH --partition=gpu\n\
             #SBATCH --gres=gpu:1\n\
             #SBATCH --time=02:00:00\n\
             #SBATCH --account='lm research'\n\
             #SBATCH --qos=high\n\
             #SBATCH --comment=team-a\n\
             #SBATCH --export=ALL\n\
             exec /opt/fm/bin/filtermon --log-format json worker --config '/home/o'\\''neil/w.toml'\n"
        );
    }
}
