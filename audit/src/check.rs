//! The one chain verifier (`cada-verify audit verify`): every link of every line of every
//! file, the checkpoint at the head of each file, and the files' continuity.
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use crate::record::Checkpoint;
use crate::{list_files, read_line, sha256, AuditError, Read1, MAX_LINE};

/// A partial last line: bytes after the last newline of the newest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialLine {
    /// File name.
    pub file: String,
    /// Byte offset where it starts (the end of the last complete line).
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// Where the checked chain starts when it does not start at the log's first line: older
/// files were removed (retention keeps the newest N), and the checkpoint at the head of
/// the first file left is the trust anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The first file left.
    pub file: String,
    /// Files before it that are gone (numbers 1 to its own minus one).
    pub files_before: u32,
    /// `seq` of the last line before the anchor (the checkpoint's `prev_seq`).
    pub seq: u64,
}

/// Result of checking a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheck {
    /// Complete lines whose links were checked and hold.
    pub lines: u64,
    /// First broken link: `file:line: reason`.
    pub broken: Option<String>,
    /// Bytes after the last newline of the newest file: a write in progress or cut short by
    /// a crash, so never acknowledged. Every complete line before it is still checked; the
    /// next start of the server cuts it.
    pub partial: Option<PartialLine>,
    /// Set when older files were removed (retention): the chain is proved from this
    /// checkpoint on.
    pub anchor: Option<Anchor>,
    /// `seq` and hex hash of the last complete line: the head to compare with a copy kept
    /// elsewhere (the files alone cannot show that lines were cut from the newest file's
    /// end).
    pub head: Option<(u64, String)>,
}

/// The checkpoint a line holds, if it is one.
fn checkpoint_of(v: &serde_json::Value) -> Option<Checkpoint> {
    if v["decision"] != "checkpoint" {
        return None;
    }
    serde_json::from_value(v["checkpoint"].clone()).ok()
}

/// Checks every link of the chain in `dir`: every complete line of every file, in order;
/// each file's number follows the one before; a file's first line is its checkpoint (files
/// of logs written before checkpoints existed excepted), which names the previous file's
/// last line. The first file left may be any number when older ones were removed: its
/// checkpoint is then the anchor ([`AuditCheck::anchor`]).
pub fn verify_dir(dir: &Path) -> Result<AuditCheck, AuditError> {
    let files = list_files(dir)?;
    if files.is_empty() {
        return Err(AuditError(format!(
            "no audit-*.jsonl files in {}",
            dir.display()
        )));
    }
    let mut prev = [0u8; 32];
    let mut seq = 0u64;
    let mut lines = 0u64;
    let mut anchor = None;
    let first_no = files[0].0;
    let mut line = Vec::new();
    let check = |lines: u64, broken: Option<String>, partial, anchor, seq, prev: [u8; 32]| {
        Ok(AuditCheck {
            lines,
            broken,
            partial,
            anchor,
            head: (seq > 0).then(|| (seq, hex::encode(prev))),
        })
    };
    for (fi, (no, path)) in files.iter().enumerate() {
        let expected_no = first_no.saturating_add(u32::try_from(fi).unwrap_or(u32::MAX));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if *no != expected_no {
            return check(
                lines,
                Some(format!(
                    "{name}: file {expected_no:06} is missing (a file deleted between two that remain)"
                )),
                None,
                anchor,
                seq,
                prev,
            );
        }
        let f = File::open(path).map_err(|e| AuditError(format!("{name}: {e}")))?;
        let mut rd = BufReader::new(f);
        let mut offset = 0u64;
        let mut n = 0u64;
        loop {
            let read =
                read_line(&mut rd, &mut line).map_err(|e| AuditError(format!("{name}: {e}")))?;
            n += 1;
            let at = format!("{name}:{n}");
            let broken = |why: String| Some(format!("{at}: {why}"));
            match read {
                Read1::Line => {}
                Read1::End if line.is_empty() => break,
                Read1::End => {
                    if fi + 1 < files.len() {
                        let why =
                            broken("the last line of a closed (rotated) file is incomplete".into());
                        return check(lines, why, None, anchor, seq, prev);
                    }
                    let partial = PartialLine {
                        file: name,
                        offset,
                        len: line.len() as u64,
                    };
                    return check(lines, None, Some(partial), anchor, seq, prev);
                }
                Read1::TooLong => {
                    let why = broken(format!("longer than {MAX_LINE} bytes"));
                    return check(lines, why, None, anchor, seq, prev);
                }
            }
            offset += line.len() as u64 + 1;
            let v: serde_json::Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => {
                    return check(
                        lines,
                        broken(format!("not JSON ({e})")),
                        None,
                        anchor,
                        seq,
                        prev,
                    )
                }
            };
            if n == 1 {
                // The head of a file: its checkpoint.
                match checkpoint_of(&v) {
                    Some(cp) if cp.file != *no => {
                        let why = format!(
                            "its checkpoint heads file {:06}: the file was renamed or files reordered",
                            cp.file
                        );
                        return check(lines, broken(why), None, anchor, seq, prev);
                    }
                    Some(cp) if fi == 0 => {
                        // The first file left: the anchor. A new log's first file names
                        // nothing before it; any other names what retention removed.
                        let Ok(h) = hex::decode(&cp.prev_hash) else {
                            return check(
                                lines,
                                broken("a checkpoint whose prev_hash is not hex".into()),
                                None,
                                anchor,
                                seq,
                                prev,
                            );
                        };
                        let Ok(h) = <[u8; 32]>::try_from(h.as_slice()) else {
                            return check(
                                lines,
                                broken("a checkpoint whose prev_hash is not 32 bytes".into()),
                                None,
                                anchor,
                                seq,
                                prev,
                            );
                        };
                        if cp.prev_seq > 0 || *no > 1 {
                            anchor = Some(Anchor {
                                file: name.clone(),
                                files_before: no.saturating_sub(1),
                                seq: cp.prev_seq,
                            });
                        }
                        seq = cp.prev_seq;
                        prev = h;
                    }
                    Some(cp) if cp.prev_seq != seq || cp.prev_hash != hex::encode(prev) => {
                        let why = format!(
                            "its checkpoint says the file before ended at seq {}, but it ends at seq {seq}: lines were cut from that file's end, or it was replaced",
                            cp.prev_seq
                        );
                        return check(lines, broken(why), None, anchor, seq, prev);
                    }
                    None if fi == 0 && !(v["seq"] == 1 && *no == 1) => {
                        let why = "the first file does not start with its checkpoint: lines were cut from its head".to_owned();
                        return check(lines, broken(why), None, anchor, seq, prev);
                    }
                    // A checkpoint that links, or a log from before checkpoints: the links
                    // alone are checked.
                    Some(_) | None => {}
                }
            }
            if v["prev"].as_str() != Some(hex::encode(prev).as_str()) {
                let why = if n == 1 {
                    "prev does not match the last line of the file before (lines cut from this file's head, or files deleted, replaced or reordered)"
                } else {
                    "prev does not match the hash of the line before (that line edited, or lines deleted or reordered)"
                };
                return check(lines, broken(why.into()), None, anchor, seq, prev);
            }
            if v["seq"].as_u64() != Some(seq + 1) {
                let why = format!("seq is {}, expected {}", v["seq"], seq + 1);
                return check(lines, broken(why), None, anchor, seq, prev);
            }
            seq += 1;
            prev = sha256(&line);
            lines += 1;
        }
    }
    check(lines, None, None, anchor, seq, prev)
}
