//! `Secret`, a value that never shows in `Debug` output or logs, and
//! `secret_ref`, which reads the one a bundle names by environment variable
//! or file. A leaf: access, guards and model all hold secrets.

use std::fmt;
use std::path::Path;

use crate::error::Problems;

/// A secret value that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

pub(crate) fn secret(v: String) -> Secret {
    Secret(v)
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A secret named by `env` (an environment variable) or `file` (relative
/// to the bundle root; trailing newline trimmed): exactly one of them.
pub(crate) fn secret_ref(
    env: Option<&str>,
    file: Option<&str>,
    root: &Path,
    base: &str,
    p: &mut Problems,
) -> Option<Secret> {
    let secret = match (env, file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(v) => v,
            Err(_) => {
                p.push(
                    format!("{base}.env"),
                    format!("environment variable `{var}` is not set"),
                );
                return None;
            }
        },
        (None, Some(f)) => match std::fs::read_to_string(root.join(f)) {
            Ok(v) => v.trim_end_matches(['\n', '\r']).to_owned(),
            Err(e) => {
                p.push(format!("{base}.file"), format!("cannot read `{f}`: {e}"));
                return None;
            }
        },
        _ => {
            p.push(base, "set exactly one of `env` and `file`");
            return None;
        }
    };
    if secret.is_empty() || secret.bytes().any(|b| b < 0x20 || b == 0x7f) {
        p.push(base, "the secret is empty or holds control characters");
        return None;
    }
    Some(Secret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_not_printed() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
