//! `cada-eif`: build a reproducible enclave image file without Docker.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use cada_image::image::{build, ImageInputs};
use clap::Parser;

/// Build an EIF from a kernel, kernel modules and the cada-enclave binary, and print its
/// PCR0/1/2 as JSON (ready for a verifier policy). The same inputs always give the same
/// bytes; archive times come from SOURCE_DATE_EPOCH (default 0).
///
/// Example: cada-eif --kernel vmlinuz --module virtio_mmio.ko --module vsock.ko …
///          --init target/release/cada-enclave --output cada.eif
#[derive(Parser)]
#[command(name = "cada-eif", version)]
struct Args {
    /// Kernel image (bzImage).
    #[arg(long)]
    kernel: PathBuf,
    /// Kernel module (uncompressed .ko), repeatable, in load order.
    #[arg(long = "module")]
    modules: Vec<PathBuf>,
    /// The statically linked cada-enclave binary; it becomes /init.
    #[arg(long)]
    init: PathBuf,
    /// Kernel command line.
    #[arg(
        long,
        default_value = "console=ttyS0 reboot=k panic=-1 pci=off nomodules=0"
    )]
    cmdline: String,
    /// Output EIF.
    #[arg(long, short)]
    output: PathBuf,
}

fn main() -> ExitCode {
    // `… | head -1`: a closed stdout ends the command quietly (status 141), no panic.
    cada_protocol::cli::exit_quietly_on_broken_pipe();
    let a = Args::parse();
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let run = || -> Result<(), String> {
        let kernel = read(&a.kernel)?;
        let init = read(&a.init)?;
        let mut modules = Vec::new();
        for m in &a.modules {
            let name = m
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| format!("{}: not a file name", m.display()))?;
            modules.push((name, read(m)?));
        }
        // Unset means 0; a value that is set but unusable is an error, not a silent 0.
        let mtime = match std::env::var("SOURCE_DATE_EPOCH") {
            Err(std::env::VarError::NotPresent) => 0,
            Ok(s) => s.trim().parse::<u32>().map_err(|_| {
                format!(
                    "SOURCE_DATE_EPOCH={s:?}: give whole seconds since 1970 (at most 4294967295)"
                )
            })?,
            Err(e) => return Err(format!("SOURCE_DATE_EPOCH: {e}")),
        };
        let (eif, pcrs) = build(&ImageInputs {
            kernel: &kernel,
            cmdline: &a.cmdline,
            modules,
            init: &init,
            mtime,
        })
        .map_err(|e| e.to_string())?;
        std::fs::write(&a.output, &eif).map_err(|e| format!("{}: {e}", a.output.display()))?;
        println!(
            "{}",
            serde_json::to_string_pretty(&pcrs).map_err(|e| e.to_string())?
        );
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cada-eif: {e}");
            ExitCode::from(2)
        }
    }
}
