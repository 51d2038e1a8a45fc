//! The durable report spool: every report is written here before it is sent, and deleted only
//! when the server acknowledges it, so restarts and outages lose nothing.
//!
//! One file per report, named so that a directory listing sorts oldest first. A file is
//! written under a temporary name, flushed to disk, then renamed, so a crash never leaves a
//! half-written report behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use wbhealth_proto::v1::Report;

/// How many reports the spool keeps while the server is unreachable; the oldest go first.
pub const DEFAULT_CAPACITY: usize = 2000;

const SUFFIX: &str = ".report";

/// What went wrong with the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file could not be read, written or removed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A folder of reports waiting for acknowledgement.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    capacity: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, and removes temporary files a crash
    /// may have left.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Spool, SpoolError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(Spool {
            dir,
            capacity: DEFAULT_CAPACITY,
        })
    }

    /// Sets how many reports it keeps.
    pub fn with_capacity(mut self, capacity: usize) -> Spool {
        self.capacity = capacity.max(1);
        self
    }

    /// Writes a report durably. When the spool is full, the oldest reports are dropped with a
    /// warning: newer results matter more than older ones.
    pub fn push(&self, report: &Report) -> Result<(), SpoolError> {
        let millis = report.finished_at.as_ref().map_or(0, |t| {
            t.seconds.max(0) * 1000 + i64::from(t.nanos / 1_000_000)
        });
        let name = format!("{millis:016}-{}{SUFFIX}", sanitize(&report.report_id));
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        {
            let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
            file.write_all(&report.encode_to_vec()).map_err(io(&tmp))?;
            file.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(&self.dir);
        let files = self.files()?;
        if files.len() > self.capacity {
            for old in &files[..files.len() - self.capacity] {
                tracing::warn!(file = %old.display(), "spool full: dropping the oldest unsent report");
                let _ = fs::remove_file(old);
            }
        }
        Ok(())
    }

    /// Every spooled report, oldest first. A file that cannot be decoded is moved aside
    /// (`.corrupt`) and skipped, so it cannot block the reports behind it.
    pub fn pending(&self) -> Result<Vec<Report>, SpoolError> {
        let mut reports = Vec::new();
        for path in self.files()? {
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SpoolError::Io { path, source: e }),
            };
            match Report::decode(bytes.as_slice()) {
                Ok(report) => reports.push(report),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "unreadable spooled report moved aside");
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        Ok(reports)
    }

    /// Deletes an acknowledged report. Deleting one that is not there is fine: an ack can
    /// arrive twice.
    pub fn remove(&self, report_id: &str) -> Result<bool, SpoolError> {
        let wanted = format!("-{}{SUFFIX}", sanitize(report_id));
        for path in self.files()? {
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&wanted))
            {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        sync_dir(&self.dir);
                        return Ok(true);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Err(e) => return Err(SpoolError::Io { path, source: e }),
                }
            }
        }
        Ok(false)
    }

    /// How many reports wait.
    pub fn len(&self) -> Result<usize, SpoolError> {
        Ok(self.files()?.len())
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> Result<bool, SpoolError> {
        Ok(self.len()? == 0)
    }

    fn files(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(SUFFIX))
            {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }
}

/// Report ids are UUIDs made by this agent; anything else is kept out of file names.
fn sanitize(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// Makes a rename durable on Unix; Windows has no directory handles to sync.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, seconds: i64) -> Report {
        Report {
            report_id: id.into(),
            finished_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn reports_survive_reopening_and_come_back_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        spool.push(&report("b", 200)).expect("push");
        spool.push(&report("a", 100)).expect("push");
        drop(spool);
        let spool = Spool::open(dir.path()).expect("reopen");
        let ids: Vec<_> = spool
            .pending()
            .expect("pending")
            .into_iter()
            .map(|r| r.report_id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn acknowledged_reports_are_removed_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        spool.push(&report("a", 1)).expect("push");
        assert!(spool.remove("a").expect("remove"));
        assert!(!spool.remove("a").expect("second remove"));
        assert!(spool.is_empty().expect("len"));
    }

    #[test]
    fn a_full_spool_drops_the_oldest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open").with_capacity(2);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            spool.push(&report(id, i as i64)).expect("push");
        }
        let ids: Vec<_> = spool
            .pending()
            .expect("pending")
            .into_iter()
            .map(|r| r.report_id)
            .collect();
        assert_eq!(ids, ["b", "c"]);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path()).expect("open");
        spool.push(&report("good", 2)).expect("push");
        fs::write(
            dir.path().join(format!("0000000000000001-bad{SUFFIX}")),
            b"\xff\xff\xff",
        )
        .expect("write");
        let ids: Vec<_> = spool
            .pending()
            .expect("pending")
            .into_iter()
            .map(|r| r.report_id)
            .collect();
        assert_eq!(ids, ["good"]);
        assert!(dir.path().join("0000000000000001-bad.corrupt").exists());
    }
}
