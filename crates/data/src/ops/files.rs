//! File-level operations: write, convert, merge and split JSONL files.
//!
//! Outputs are written to a temporary file beside the target and renamed over it only when
//! complete, so a failure (a bad input line in strict mode, a full disk) never leaves a
//! half-written output or clobbers an existing one.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::encoding::{EncodeOptions, Encoding, encode_line};
use crate::error::{Error, Result};
use crate::example::{Example, Split};
use crate::ops::split::{SplitRatios, apply_split};
use crate::reader::{DuplicateIds, ExampleReader, ReadReport, ReaderOptions, id_key};

/// How to write a JSONL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// The encoding of every line.
    pub encoding: Encoding,
    /// Encoding options (lossy lab output).
    pub encode: EncodeOptions,
    /// Start the file with a UTF-8 byte-order mark (Azure OpenAI fine-tuning asks for one).
    pub bom: bool,
}

impl Default for WriteOptions {
    /// The full format, no BOM.
    fn default() -> Self {
        WriteOptions {
            encoding: Encoding::Full,
            encode: EncodeOptions::default(),
            bom: false,
        }
    }
}

/// A file being written under a temporary name, renamed into place by [`AtomicFile::commit`]
/// and removed if dropped uncommitted.
struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    out: Option<BufWriter<File>>,
}

impl AtomicFile {
    fn create(dest: &Path) -> Result<Self> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.distill-tmp"));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            out: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("written after commit");
        out.write_all(bytes).map_err(|e| Error::io(&self.tmp, e))
    }

    fn commit(mut self) -> Result<()> {
        let out = self.out.take().expect("committed twice");
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `examples` to `path` atomically; the first error stops the write and leaves `path`
/// untouched. Returns the number of examples written.
pub fn write_examples<I>(path: impl AsRef<Path>, examples: I, options: &WriteOptions) -> Result<u64>
where
    I: IntoIterator<Item = Result<Example>>,
{
    let mut out = AtomicFile::create(path.as_ref())?;
    if options.bom {
        out.write(b"\xEF\xBB\xBF")?;
    }
    let mut buf = Vec::new();
    let mut n = 0;
    for e in examples {
        buf.clear();
        encode_line(&e?, options.encoding, options.encode, &mut buf)?;
        out.write(&buf)?;
        n += 1;
    }
    out.commit()?;
    Ok(n)
}

/// What [`convert`] did.
#[derive(Debug)]
pub struct ConvertReport {
    /// The reader's report (bad lines skipped in lenient mode).
    pub read: ReadReport,
    /// Examples written.
    pub written: u64,
}

/// Re-encodes `input` (any encoding) as `output`.
pub fn convert(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    reader: ReaderOptions,
    write: &WriteOptions,
) -> Result<ConvertReport> {
    let mut r = ExampleReader::open_with(input, reader)?;
    let written = write_examples(output, r.by_ref(), write)?;
    Ok(ConvertReport {
        read: r.into_report(),
        written,
    })
}

/// What [`merge`] did.
#[derive(Debug)]
pub struct MergeReport {
    /// One report per input, in order.
    pub reads: Vec<ReadReport>,
    /// Examples written.
    pub written: u64,
    /// Examples dropped because an earlier one had the same id.
    pub duplicates: u64,
}

/// Concatenates `inputs` (each in any encoding) into `output`, keeping the first example of
/// each id, within and across files.
pub fn merge(
    inputs: &[PathBuf],
    output: impl AsRef<Path>,
    reader: ReaderOptions,
    write: &WriteOptions,
) -> Result<MergeReport> {
    let reader = ReaderOptions {
        duplicate_ids: DuplicateIds::Allow,
        ..reader
    };
    let mut out = AtomicFile::create(output.as_ref())?;
    if write.bom {
        out.write(b"\xEF\xBB\xBF")?;
    }
    let mut seen = HashSet::new();
    let mut report = MergeReport {
        reads: Vec::new(),
        written: 0,
        duplicates: 0,
    };
    let mut buf = Vec::new();
    for input in inputs {
        let mut r = ExampleReader::open_with(input, reader)?;
        for e in r.by_ref() {
            let e = e?;
            if !seen.insert(id_key(&e.id)) {
                report.duplicates += 1;
                continue;
            }
            buf.clear();
            encode_line(&e, write.encoding, write.encode, &mut buf)?;
            out.write(&buf)?;
            report.written += 1;
        }
        report.reads.push(r.into_report());
    }
    out.commit()?;
    Ok(report)
}

/// Where [`split_file`] writes each split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitOutputs {
    /// The training file.
    pub train: PathBuf,
    /// The validation file.
    pub val: PathBuf,
    /// The test file.
    pub test: PathBuf,
}

impl SplitOutputs {
    /// `dir/train.jsonl`, `dir/val.jsonl` and `dir/test.jsonl`.
    pub fn in_dir(dir: impl AsRef<Path>) -> Self {
        let d = dir.as_ref();
        SplitOutputs {
            train: d.join("train.jsonl"),
            val: d.join("val.jsonl"),
            test: d.join("test.jsonl"),
        }
    }
}

/// Examples written per split by [`split_file`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SplitCounts {
    /// Training examples.
    pub train: u64,
    /// Validation examples.
    pub val: u64,
    /// Test examples.
    pub test: u64,
}

/// Splits `input` into three files by [`crate::ops::split::assign_split`] (an example that
/// already has a split keeps it). All three are written atomically, or none is changed.
pub fn split_file(
    input: impl AsRef<Path>,
    outputs: &SplitOutputs,
    ratios: &SplitRatios,
    reader: ReaderOptions,
    write: &WriteOptions,
) -> Result<SplitCounts> {
    ratios.validate()?;
    let mut files = [
        AtomicFile::create(&outputs.train)?,
        AtomicFile::create(&outputs.val)?,
        AtomicFile::create(&outputs.test)?,
    ];
    if write.bom {
        for f in &mut files {
            f.write(b"\xEF\xBB\xBF")?;
        }
    }
    let mut counts = SplitCounts::default();
    let mut buf = Vec::new();
    for e in ExampleReader::open_with(input, reader)? {
        let mut e = e?;
        apply_split(&mut e, ratios);
        let (i, n) = match e.split {
            Some(Split::Val) => (1, &mut counts.val),
            Some(Split::Test) => (2, &mut counts.test),
            _ => (0, &mut counts.train),
        };
        buf.clear();
        encode_line(&e, write.encoding, write.encode, &mut buf)?;
        files[i].write(&buf)?;
        *n += 1;
    }
    for f in files {
        f.commit()?;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::Message;
    use crate::reader::read_file;

    fn examples(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example::new(vec![Message::user(format!("q{i}"))], format!("a{i}")))
            .collect()
    }

    #[test]
    fn failed_write_leaves_destination_untouched() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.jsonl");
        std::fs::write(&p, "old").unwrap();
        let items = vec![Ok(examples(1).remove(0)), Err(Error::Config("boom".into()))];
        assert!(write_examples(&p, items, &WriteOptions::default()).is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "temporary file left behind"
        );
    }

    #[test]
    fn convert_between_encodings() {
        let d = tempfile::tempdir().unwrap();
        let full = d.path().join("full.jsonl");
        let chat = d.path().join("chat.jsonl");
        let ex = examples(3);
        write_examples(&full, ex.iter().cloned().map(Ok), &WriteOptions::default()).unwrap();
        let w = WriteOptions {
            encoding: Encoding::Chat,
            bom: true,
            ..WriteOptions::default()
        };
        let rep = convert(&full, &chat, ReaderOptions::default(), &w).unwrap();
        assert_eq!(rep.written, 3);
        assert!(
            std::fs::read(&chat)
                .unwrap()
                .starts_with(b"\xEF\xBB\xBF{\"messages\"")
        );
        assert_eq!(read_file(&chat).unwrap(), ex);
    }

    #[test]
    fn merge_drops_repeated_ids() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.jsonl");
        let b = d.path().join("b.jsonl");
        let out = d.path().join("m.jsonl");
        let ex = examples(4);
        write_examples(&a, ex[..3].iter().cloned().map(Ok), &WriteOptions::default()).unwrap();
        let lab = WriteOptions {
            encoding: Encoding::Lab,
            ..WriteOptions::default()
        };
        write_examples(&b, ex[2..].iter().cloned().map(Ok), &lab).unwrap();
        let rep = merge(&[a, b], &out, ReaderOptions::default(), &WriteOptions::default()).unwrap();
        assert_eq!((rep.written, rep.duplicates), (4, 1));
        assert_eq!(read_file(&out).unwrap(), ex);
    }

    #[test]
    fn split_file_partitions_everything() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in.jsonl");
        write_examples(
            &input,
            examples(200).into_iter().map(Ok),
            &WriteOptions::default(),
        )
        .unwrap();
        let outs = SplitOutputs::in_dir(d.path());
        let ratios = SplitRatios {
            train: 0.6,
            val: 0.2,
            test: 0.2,
        };
        let c = split_file(
            &input,
            &outs,
            &ratios,
            ReaderOptions::default(),
            &WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(c.train + c.val + c.test, 200);
        assert!(c.train > 90 && c.val > 20 && c.test > 20, "{c:?}");
        let test = read_file(&outs.test).unwrap();
        assert_eq!(test.len() as u64, c.test);
        assert!(test.iter().all(|e| e.split == Some(Split::Test)));
        // A grown file keeps earlier assignments.
        write_examples(
            &input,
            examples(300).into_iter().map(Ok),
            &WriteOptions::default(),
        )
        .unwrap();
        split_file(
            &input,
            &outs,
            &ratios,
            ReaderOptions::default(),
            &WriteOptions::default(),
        )
        .unwrap();
        let test2 = read_file(&outs.test).unwrap();
        let ids: HashSet<_> = test2.iter().map(|e| e.id.clone()).collect();
        assert!(test.iter().all(|e| ids.contains(&e.id)));
    }
}
