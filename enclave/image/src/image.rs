//! Building enclave images without Docker, reproducibly: deterministic cpio (newc)
//! archives and the EIF around them. The same inputs always give the same bytes — entries
//! sorted, times fixed to `SOURCE_DATE_EPOCH` (0 by default), owners root, inode numbers
//! sequential.
//!
//! Layout: the bootstrap ramdisk (PCR1) holds the directories, `/dev/console` and the
//! kernel modules; the application ramdisk (PCR2) holds `/init`, the `cada-enclave` binary.
use crate::eif::{self, EifPcrs, SectionType};
use crate::ImageError;

/// One archive entry.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory.
    Dir(String),
    /// A regular file with its mode bits.
    File(String, u32, Vec<u8>),
    /// A character device `(major, minor)`.
    CharDev(String, u32, u32),
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir(p) | Entry::File(p, _, _) | Entry::CharDev(p, _, _) => p,
        }
    }
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    size: usize,
    mtime: u32,
    rdev: (u32, u32),
    name: &str,
) -> Result<(), ImageError> {
    let too_large = |what: &str| ImageError::Input(format!("{name}: {what} too large for cpio"));
    let size = u32::try_from(size).map_err(|_| too_large("file"))?;
    let namesize = u32::try_from(name.len() + 1).map_err(|_| too_large("name"))?;
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        if mode & 0o170000 == 0o040000 { 2 } else { 1 },
        mtime,
        size,
        0,
        0,
        rdev.0,
        rdev.1,
        namesize,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    Ok(())
}

/// A newc cpio archive of `entries` (sorted by path), deterministic.
pub fn cpio(entries: &[Entry], mtime: u32) -> Result<Vec<u8>, ImageError> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path().cmp(b.path()));
    let mut out = Vec::new();
    for (i, e) in sorted.iter().enumerate() {
        let ino = u32::try_from(i + 1)
            .map_err(|_| ImageError::Input("too many entries for cpio".into()))?;
        match e {
            Entry::Dir(p) => header(&mut out, ino, 0o040755, 0, mtime, (0, 0), p)?,
            Entry::CharDev(p, maj, min) => {
                header(&mut out, ino, 0o020600, 0, mtime, (*maj, *min), p)?;
            }
            Entry::File(p, mode, data) => {
                header(
                    &mut out,
                    ino,
                    0o100000 | (mode & 0o7777),
                    data.len(),
                    mtime,
                    (0, 0),
                    p,
                )?;
                out.extend_from_slice(data);
                pad4(&mut out);
            }
        }
    }
    header(&mut out, 0, 0, 0, 0, (0, 0), "TRAILER!!!")?;
    Ok(out)
}

/// What goes into an image.
pub struct ImageInputs<'a> {
    /// The kernel (bzImage).
    pub kernel: &'a [u8],
    /// Kernel command line.
    pub cmdline: &'a str,
    /// Kernel modules `(file name, bytes)`, loaded by `/init` in this order.
    pub modules: Vec<(String, Vec<u8>)>,
    /// The `cada-enclave` binary (statically linked).
    pub init: &'a [u8],
    /// Fixed time for archive entries.
    pub mtime: u32,
}

/// Builds the EIF and returns it with its PCRs.
pub fn build(inputs: &ImageInputs<'_>) -> Result<(Vec<u8>, EifPcrs), ImageError> {
    let mut boot = vec![
        Entry::Dir("dev".into()),
        Entry::Dir("proc".into()),
        Entry::Dir("sys".into()),
        Entry::Dir("tmp".into()),
        Entry::Dir("run".into()),
        Entry::Dir("lib".into()),
        Entry::Dir("lib/modules".into()),
        Entry::CharDev("dev/console".into(), 5, 1),
    ];
    let order: Vec<String> = inputs.modules.iter().map(|(n, _)| n.clone()).collect();
    for (name, data) in &inputs.modules {
        if name.contains('/') || name.is_empty() {
            return Err(ImageError::Input(format!(
                "module name {name:?} must be a plain file name"
            )));
        }
        boot.push(Entry::File(
            format!("lib/modules/{name}"),
            0o644,
            data.clone(),
        ));
    }
    // The load order, one file name per line, read by `/init`.
    boot.push(Entry::File(
        "lib/modules/order".into(),
        0o644,
        (order.join("\n") + "\n").into_bytes(),
    ));
    let app = vec![Entry::File("init".into(), 0o755, inputs.init.to_vec())];
    let boot = cpio(&boot, inputs.mtime)?;
    let app = cpio(&app, inputs.mtime)?;
    let eif = eif::write(
        &[
            (SectionType::Kernel, inputs.kernel),
            (SectionType::Cmdline, inputs.cmdline.as_bytes()),
            (SectionType::Ramdisk, &boot),
            (SectionType::Ramdisk, &app),
        ],
        512 * 1024 * 1024,
        2,
    )?;
    let pcrs = eif::pcrs(&eif)?;
    Ok((eif, pcrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(init: &'a [u8]) -> ImageInputs<'a> {
        ImageInputs {
            kernel: b"bzImage bytes",
            cmdline: "console=ttyS0 reboot=k panic=-1",
            modules: vec![
                ("vsock.ko".into(), b"mod-a".to_vec()),
                ("nsm.ko".into(), b"mod-b".to_vec()),
            ],
            init,
            mtime: 0,
        }
    }

    #[test]
    fn same_inputs_same_bytes_and_one_init_byte_moves_pcr0_and_pcr2() {
        let (a, pa) = build(&inputs(b"cada-enclave v1")).unwrap();
        let (b, pb) = build(&inputs(b"cada-enclave v1")).unwrap();
        assert_eq!(a, b);
        assert_eq!(pa, pb);
        let (_, pc) = build(&inputs(b"cada-enclave v2")).unwrap();
        assert_ne!(pa.pcr0, pc.pcr0);
        assert_ne!(pa.pcr2, pc.pcr2);
        assert_eq!(
            pa.pcr1, pc.pcr1,
            "the bootstrap (kernel, cmdline, modules) did not change"
        );
    }

    #[test]
    fn cpio_is_sorted_padded_and_terminated() {
        let c = cpio(
            &[
                Entry::File("b".into(), 0o644, vec![1, 2, 3]),
                Entry::Dir("a".into()),
            ],
            0,
        )
        .unwrap();
        assert_eq!(c.len() % 4, 0);
        let text = String::from_utf8_lossy(&c);
        assert!(text.find("a\0").unwrap() < text.find("b\0").unwrap());
        assert!(text.contains("TRAILER!!!"));
        assert!(build(&ImageInputs {
            modules: vec![("../x.ko".into(), vec![])],
            ..inputs(b"x")
        })
        .is_err());
    }
}
