//! The data dir's file areas (`recordings/`, `snapshots/`, `events/` for detection events' pictures) and the one rule for names clients give: a name is never a
//! path. Every path to a client-named file is built here, from a validated name, inside its area.

use std::path::{Path, PathBuf};

use crate::error::{Dependency, Error, Result};

/// A file area under the data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Recordings,
    Snapshots,
    /// The best picture of each detection event.
    Events,
}

impl Area {
    pub fn dir_name(self) -> &'static str {
        match self {
            Area::Recordings => "recordings",
            Area::Snapshots => "snapshots",
            Area::Events => "events",
        }
    }
}

/// Characters escaped in download URLs: everything but RFC 3986's unreserved ones.
const URL_ESCAPED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The path, on camhub's HTTP listener, where a file of `area` is downloaded.
pub fn download_url(area: Area, name: &str) -> String {
    format!("/files/{}/{}", area.dir_name(), percent_encoding::utf8_percent_encode(name, URL_ESCAPED))
}

/// The rule, as clients see it in -32602 errors.
pub const NAME_RULE: &str = r#"a plain file name: 1-255 bytes, none of / \ < > : " | ? *, no '..', NUL or control characters, not starting with '.'"#;

/// Characters no client-given name may hold: separators, and what Windows and URL schemes (`javascript:`) give a
/// meaning to, so a name is safe wherever it ends up (a download URL, a web page, a copy on another machine).
const FORBIDDEN: &[char] = &['/', '\\', '<', '>', ':', '"', '|', '?', '*'];

/// Checks that `name` is a plain file name.
pub fn validate_name(param: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains("..")
        && !name.chars().any(|c| FORBIDDEN.contains(&c) || c.is_control());
    if ok { Ok(()) } else { Err(Error::invalid_param(param, NAME_RULE)) }
}

/// The data dir's areas.
#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
}

impl Files {
    pub fn new(root: &Path) -> Files {
        Files { root: root.to_path_buf() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, area: Area) -> PathBuf {
        self.root.join(area.dir_name())
    }

    /// Creates the areas.
    pub fn create_dirs(&self) -> std::io::Result<()> {
        for area in [Area::Recordings, Area::Snapshots, Area::Events] {
            std::fs::create_dir_all(self.dir(area))?;
        }
        Ok(())
    }

    /// The path of a validated name in `area`.
    pub fn path(&self, area: Area, param: &'static str, name: &str) -> Result<PathBuf> {
        validate_name(param, name)?;
        Ok(self.dir(area).join(name))
    }

    /// Size of all regular files in `area`.
    pub fn area_size(&self, area: Area) -> u64 {
        std::fs::read_dir(self.dir(area))
            .map(|entries| {
                entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
            })
            .unwrap_or(0)
    }
}

/// fsyncs a file and then its directory, so both its content and its name survive a power cut.
pub fn sync_file_and_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()?;
    sync_parent(path)
}

/// fsyncs the directory holding `path`, so a name created or removed there survives a power cut.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Runs file work on the blocking pool, off the async runtimes; a task that could not run is a storage failure.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::dependency(Dependency::Storage, e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_never_paths() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            ".hidden",
            "a\0b",
            "x..y",
            "a\nb",
            &"x".repeat(256),
            "javascript:alert(1)",
            "a<b",
            "a>b",
            "a\"b",
            "a|b",
            "a?b",
            "a*b",
            "a\u{7f}b",
        ] {
            assert!(validate_name("filename", bad).is_err(), "{bad:?}");
        }
        for good in ["cam0_2026-11-22T00-00-00Z.jpg", "my snapshot.jpg", "a", "x.y.z"] {
            assert!(validate_name("filename", good).is_ok(), "{good:?}");
        }
        let files = Files::new(Path::new("/data"));
        assert_eq!(
            files.path(Area::Snapshots, "filename", "a.jpg").expect("valid"),
            Path::new("/data/snapshots/a.jpg")
        );
        assert!(files.path(Area::Snapshots, "filename", "../camhub.db").is_err());
    }
}
