//! The one error type of the image crate.

/// What can go wrong reading or building an enclave image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The bytes are not a well-formed EIF (structure, limits or CRC).
    #[error("EIF: {0}")]
    Eif(String),
    /// The inputs cannot be put into an image (a bad module name, a file too large for cpio).
    #[error("image input: {0}")]
    Input(String),
}

impl ImageError {
    /// A stable short code for JSON output and logs (`eif` matches what `cada-verify pcrs`
    /// printed before the format moved here).
    pub fn code(&self) -> &'static str {
        match self {
            ImageError::Eif(_) => "eif",
            ImageError::Input(_) => "image.input",
        }
    }
}
