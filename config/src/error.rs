//! Errors raised while loading and validating a bundle.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a bundle: which file, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File inside the bundle, relative to its root (e.g. `warden.yaml`).
    pub file: String,
    /// Dotted field path (`service_groups[0].servers[1].upstreams[0]`), empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

/// Every problem found in a bundle. Validation collects them all rather than
/// stopping at the first, so an author fixes a bundle in one pass.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read bundle at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle is invalid ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl BundleError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            BundleError::Invalid(p) => p,
            BundleError::Io { .. } => &[],
        }
    }
}

/// Collects problems while a bundle is validated.
#[derive(Debug, Default)]
pub struct Problems {
    file: String,
    items: Vec<Problem>,
}

impl Problems {
    pub fn new(file: impl Into<String>) -> Self {
        Problems {
            file: file.into(),
            items: Vec::new(),
        }
    }
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.items.push(Problem {
            file: self.file.clone(),
            path: path.into(),
            message: message.into(),
        });
    }
    /// The file problems are reported in.
    pub fn file(&self) -> &str {
        &self.file
    }
    pub fn set_file(&mut self, file: impl Into<String>) {
        self.file = file.into();
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn extend(&mut self, other: Problems) {
        self.items.extend(other.items);
    }
    pub fn into_vec(self) -> Vec<Problem> {
        self.items
    }
}
