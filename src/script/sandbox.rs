//! The folders a script may read and write: the working folder it started in and the folders
//! granted with `--allow-dir`. Every path a script names (`load`, `save`, `abc` of a file,
//! `read_text`, `write_text`) is resolved here, symbolic links and `..` included, before it is
//! opened; a path outside says so and how to allow it.
//!
//! Live coders share and download scripts, so a script must not be able to read
//! `/etc/shadow` or `~/.ssh/id_ed25519` or write `../../.bashrc`. The script file itself and
//! model folders (`model("dir")`, read only as weights) are named by the user, not checked here.

use std::path::{Component, Path, PathBuf};

/// What a script wants to do with a path (named in refusals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "{path} is outside the folders this script may {verb} ({allowed}); \
         run cadenza with --allow-dir {suggest} to allow it",
        verb = match access { Access::Read => "read", Access::Write => "write" },
        allowed = roots.join(", ")
    )]
    Outside { path: String, access: Access, roots: Vec<String>, suggest: String },
    #[error("{path}: {reason}")]
    Unresolvable { path: String, reason: String },
}

/// The folders a session's scripts may use, resolved once (canonical, so comparisons are by
/// real location).
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The working folder: relative paths are taken from here.
    base: PathBuf,
    roots: Vec<PathBuf>,
}

impl Sandbox {
    /// The working folder plus `allowed` (relative ones taken from the working folder). A
    /// granted folder that does not exist is an error, so a typo is not silently ignored.
    pub fn new(allowed: &[PathBuf]) -> Result<Sandbox, SandboxError> {
        let cwd = std::env::current_dir().map_err(|e| SandboxError::Unresolvable {
            path: ".".into(),
            reason: format!("the working folder cannot be read: {e}"),
        })?;
        Sandbox::with_base(&cwd, allowed)
    }

    /// A sandbox that allows nothing (when the working folder itself cannot be read).
    pub fn closed() -> Sandbox {
        Sandbox { base: PathBuf::from("/"), roots: Vec::new() }
    }

    /// As [`Sandbox::new`], with `base` as the working folder.
    pub fn with_base(base: &Path, allowed: &[PathBuf]) -> Result<Sandbox, SandboxError> {
        let canonical = |p: &Path| {
            std::fs::canonicalize(p).map_err(|e| SandboxError::Unresolvable {
                path: p.display().to_string(),
                reason: format!("cannot be allowed: {e}"),
            })
        };
        let base = canonical(base)?;
        let mut roots = vec![base.clone()];
        for dir in allowed {
            roots.push(canonical(&base.join(dir))?);
        }
        Ok(Sandbox { base, roots })
    }

    /// The real location of `path` if a script may `access` it, else why not. A file that does
    /// not exist yet (a `save` target) is placed by its folder, which must exist.
    pub fn check(&self, path: &str, access: Access) -> Result<PathBuf, SandboxError> {
        let unresolvable = |reason: String| SandboxError::Unresolvable { path: path.to_string(), reason };
        if path.is_empty() {
            return Err(unresolvable("an empty path names no file".into()));
        }
        let full = self.base.join(path);
        let real = match std::fs::canonicalize(&full) {
            Ok(real) => real,
            Err(_) => {
                // Not there yet: its folder must be, and the last part must be a plain name.
                let name = match full.components().next_back() {
                    Some(Component::Normal(name)) => name.to_owned(),
                    _ => return Err(unresolvable("does not name a file".into())),
                };
                let parent = full.parent().unwrap_or(&self.base);
                let parent = std::fs::canonicalize(parent)
                    .map_err(|e| unresolvable(format!("its folder {} cannot be used: {e}", parent.display())))?;
                parent.join(name)
            }
        };
        if self.roots.iter().any(|root| real.starts_with(root)) {
            Ok(real)
        } else {
            let suggest = real.parent().unwrap_or(&real).display().to_string();
            Err(SandboxError::Outside {
                path: path.to_string(),
                access,
                roots: self.roots.iter().map(|r| r.display().to_string()).collect(),
                suggest,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Sandbox) {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("takes")).unwrap();
        std::fs::create_dir_all(dir.path().join("shared")).unwrap();
        std::fs::write(dir.path().join("secret.txt"), "key").unwrap();
        std::fs::write(work.join("tune.abc"), "X:1\nK:C\nC").unwrap();
        let sandbox = Sandbox::with_base(&work, &[PathBuf::from("../shared")]).unwrap();
        (dir, sandbox)
    }

    #[test]
    fn paths_inside_the_working_and_granted_folders_pass() {
        let (dir, s) = setup();
        let work = std::fs::canonicalize(dir.path().join("work")).unwrap();
        assert_eq!(s.check("tune.abc", Access::Read).unwrap(), work.join("tune.abc"));
        assert_eq!(s.check("takes/new.mid", Access::Write).unwrap(), work.join("takes/new.mid"));
        assert_eq!(s.check("takes/../tune.abc", Access::Read).unwrap(), work.join("tune.abc"));
        assert!(s.check("../shared/x.abc", Access::Write).is_ok());
        let abs = work.join("tune.abc").display().to_string();
        assert!(s.check(&abs, Access::Read).is_ok());
    }

    #[test]
    fn paths_outside_are_refused_saying_how_to_allow_them() {
        let (dir, s) = setup();
        let e = s.check("../secret.txt", Access::Read).unwrap_err().to_string();
        assert!(e.contains("outside the folders this script may read"), "{e}");
        assert!(e.contains("--allow-dir"), "{e}");
        assert!(s.check("/etc/passwd", Access::Read).is_err());
        assert!(s.check("../../x.mid", Access::Write).is_err());
        assert!(s.check("missing/x.mid", Access::Write).is_err(), "a folder that does not exist");
        assert!(s.check("", Access::Read).is_err());
        assert!(s.check("..", Access::Write).is_err());
        // A link inside the working folder that points outside is judged by where it points.
        #[cfg(unix)]
        {
            let link = dir.path().join("work/link.txt");
            std::os::unix::fs::symlink(dir.path().join("secret.txt"), &link).unwrap();
            assert!(s.check("link.txt", Access::Read).is_err());
            let dir_link = dir.path().join("work/up");
            std::os::unix::fs::symlink(dir.path(), &dir_link).unwrap();
            assert!(s.check("up/new.mid", Access::Write).is_err());
        }
    }

    #[test]
    fn a_granted_folder_that_does_not_exist_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Sandbox::with_base(dir.path(), &[PathBuf::from("nope")]).unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("cannot be allowed"), "{e}");
    }
}
