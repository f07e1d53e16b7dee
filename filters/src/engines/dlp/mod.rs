//! DLP and content safety: a detector library scanned over what the JSON
//! means (string values and object keys after unescaping), with per-rule,
//! per-direction, per-risk actions — block, redact (mask or keyed hash
//! token), strip, or log.
//!
//! Speed comes from not looking. One prefilter pass over the raw message
//! ([`prefilter`]) finds every place where some detector could match; a
//! message with none (and no `\u` or `\/` escape, which could hide one) is
//! clean without being parsed. Otherwise a span-aware walk ([`walk`]) maps
//! those places to the strings that hold them — strings with escapes are
//! decoded and passed through the prefilter again — and each triggered
//! detector's regex runs only on a window around its candidates. Strings
//! holding non-ASCII characters that a reader would not see or would read
//! as ASCII (zero-width and other format characters, Unicode spaces,
//! full-width and other compatibility forms) are also scanned in their
//! normalised view ([`normalise`]), whose matches map back to the whole
//! original span. Text under an encoding a reader undoes (base64, hex,
//! percent-encoding) is decoded and scanned too ([`encoded`]); binary
//! content that decodes to text is read as that text. Redaction splices new string literals into the raw
//! message; nothing else changes.
//!
//! This is the engine: [`Scanner`] finds what the detectors match in text
//! or in a raw JSON message. The filter that applies the bundle's rules to
//! messages (block, redact, strip, log) is `guards::dlp`.

/// The country codes an IBAN can begin with (the validator's table, a test
/// holds them equal), as one alternation: the IBAN patterns begin with one
/// of them rather than any two letters, which the validator refuses anyway
/// and which hex digests and tokens are full of (`ab12…`).
macro_rules! iban_countries {
    () => {
        "A[DELTZ]|B[AEGHIRY]|C[HRYZ]|D[EJKO]|E[EGS]|F[IKOR]|G[BEILRT]|H[RU]|I[ELQST]|JO|K[WZ]|L[BCITUVY]|M[CDEKNRTU]|N[ILO]|OM|P[KLST]|QA|R[OSU]|S[ACDEIKMOTV]|T[LNR]|UA|V[AG]|XK"
    };
}

/// A test-only switch that turns a shortcut off (the reading a property
/// test holds the shortcut to), and the function that reads it: `false`
/// outside tests.
macro_rules! reference_switch {
    ($(#[$doc:meta])* $vis:vis static $name:ident; fn $read:ident;) => {
        #[cfg(test)]
        thread_local! {
            $(#[$doc])*
            $vis static $name: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }

        fn $read() -> bool {
            #[cfg(test)]
            return $name.with(|r| r.get());
            #[cfg(not(test))]
            false
        }
    };
}

mod decode;
pub mod detectors;
pub(crate) mod encoded;
mod grouped;
mod items;
mod json;
mod masks;
pub(crate) mod normalise;
mod prefilter;
mod scanner;
mod spec;
mod stream;
mod validators;
mod walk;

pub use json::Uninspectable;
pub use scanner::{Detector, Hit, Scanner};
pub use stream::{carried, stream_text, Shown, STREAM_CARRY};
