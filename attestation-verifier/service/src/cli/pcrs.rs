//! `cada-verify pcrs`.
use cada_image::eif;
use clap::Args;

use super::{read_input_limited, UsageError};

/// Arguments of `cada-verify pcrs`.
#[derive(Args)]
pub struct PcrsArgs {
    /// The enclave image file (`-` reads stdin).
    pub eif: String,
}

/// Prints PCR0/1/2 (and PCR8 when signed) as JSON, ready for a policy.
pub fn run(a: PcrsArgs) -> Result<bool, UsageError> {
    let bytes = read_input_limited(&a.eif, eif::MAX_EIF_LEN)?;
    match eif::pcrs(&bytes) {
        Ok(p) => {
            super::print_json(&p);
            Ok(true)
        }
        Err(e) => {
            println!("INVALID [{}] {e}", e.code());
            Ok(false)
        }
    }
}
