//! Finding the manifest files under the paths given: each real directory
//! (and file) is read once however many symlinks lead to it, so a link
//! loop (`x -> .`) neither repeats objects nor recurses until ELOOP; and
//! only regular files are read from directories, so a FIFO named `*.yaml`
//! cannot block the run.

use std::collections::HashSet;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ManifestError;

/// A file to read, and whether it was found by walking a directory (rather
/// than named on the command line): only found files may hold documents
/// that are not Kubernetes objects (`values.yaml`, a kustomization, the
/// config file), which are then skipped with a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found {
    pub path: PathBuf,
    pub in_directory: bool,
}

/// Something the reading left out, and why; the caller shows it (the audit
/// on stderr, `serve --state-from` in its log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub path: String,
    pub skipped: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped {}: {}", self.path, self.skipped)
    }
}

/// The real files and directories already taken, by (device, inode).
#[derive(Default)]
pub(super) struct Walk {
    seen: HashSet<(u64, u64)>,
    pub files: Vec<Found>,
    pub notes: Vec<Note>,
}

impl Walk {
    /// Adds `path`: a named file is read whatever its type and extension
    /// (`<(kubectl get ...)` is a FIFO); a directory is walked.
    pub fn add(&mut self, path: &Path) -> Result<(), ManifestError> {
        let meta = std::fs::metadata(path).map_err(|source| read_error(path, source))?;
        if meta.is_dir() {
            self.seen.insert(identity(&meta));
            return self.directory(path);
        }
        self.files.push(Found {
            path: path.to_owned(),
            in_directory: false,
        });
        Ok(())
    }

    /// Inside directories only `.yaml`, `.yml` and `.json` files are read,
    /// in name order.
    fn directory(&mut self, dir: &Path) -> Result<(), ManifestError> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
            .map_err(|source| read_error(dir, source))?;
        entries.sort();
        for entry in entries {
            // Followed: a symlink to a directory or file elsewhere is read,
            // once.
            let meta = std::fs::metadata(&entry).map_err(|source| read_error(&entry, source))?;
            if meta.is_dir() {
                if self.seen.insert(identity(&meta)) {
                    self.directory(&entry)?;
                } else {
                    self.note(
                        &entry,
                        "directory already read (a symlink loop or a second link to it)",
                    );
                }
                continue;
            }
            if !is_manifest_name(&entry) {
                continue;
            }
            if !meta.is_file() {
                self.note(&entry, "not a regular file (a FIFO, socket or device)");
            } else if self.seen.insert(identity(&meta)) {
                self.files.push(Found {
                    path: entry,
                    in_directory: true,
                });
            } else {
                self.note(&entry, "file already read (a second link to it)");
            }
        }
        Ok(())
    }

    fn note(&mut self, path: &Path, skipped: &str) {
        self.notes.push(Note {
            path: path.display().to_string(),
            skipped: skipped.to_owned(),
        });
    }
}

fn identity(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn is_manifest_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn read_error(path: &Path, source: std::io::Error) -> ManifestError {
    ManifestError::Read {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn walk(path: &Path) -> Walk {
        let mut walk = Walk::default();
        walk.add(path).unwrap();
        walk
    }

    fn names(walk: &Walk, root: &Path) -> Vec<String> {
        walk.files
            .iter()
            .map(|f| f.path.strip_prefix(root).unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn symlink_loops_are_walked_once_and_noted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("a.yaml"), "").unwrap();
        std::fs::write(root.join("sub/b.yaml"), "").unwrap();
        symlink(".", root.join("x")).unwrap();
        symlink("..", root.join("sub/up")).unwrap();
        symlink("a.yaml", root.join("again.yaml")).unwrap();
        let walk = walk(root);
        assert_eq!(names(&walk, root), ["a.yaml", "sub/b.yaml"]);
        assert!(walk.files.iter().all(|f| f.in_directory));
        let notes: Vec<String> = walk.notes.iter().map(ToString::to_string).collect();
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].ends_with("again.yaml: file already read (a second link to it)"));
        assert!(
            notes[1].contains("sub/up: directory already read"),
            "{notes:?}"
        );
        assert!(notes[2].contains("/x: directory already read"), "{notes:?}");
    }

    #[test]
    fn a_fifo_is_skipped_in_a_directory_and_kept_when_named() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let walked = walk(dir.path());
        assert!(walked.files.is_empty());
        assert_eq!(
            walked.notes[0].skipped,
            "not a regular file (a FIFO, socket or device)"
        );
        let named = walk(&fifo);
        assert_eq!(
            named.files,
            [Found {
                path: fifo,
                in_directory: false
            }]
        );
    }
}
