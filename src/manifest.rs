//! Reading Kubernetes manifests: files, directories (recursively) and stdin;
//! multi-document YAML, JSON, and `kind: List`. Used by `meshgate audit` and
//! `serve --state-from`.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// Where a document came from: the file (`-` for stdin), its 1-based
/// document number and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub document: usize,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub origin: Origin,
    pub api_version: String,
    pub kind: String,
    pub value: Value,
}

impl Manifest {
    pub fn namespace(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
    }

    pub fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}, document {document}: {problem}")]
    Parse {
        file: String,
        document: usize,
        problem: String,
    },
}

/// Reads every path (`-` is stdin) into manifests, in a stable order.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    visit_paths(paths, &mut |m| {
        manifests.push(m);
        Ok(())
    })?;
    Ok(manifests)
}

/// Hands every manifest of every path to `visit`, one document at a time,
/// so a caller that keeps only an index never holds all documents at once.
pub fn visit_paths(paths: &[PathBuf], visit: &mut Visit<'_>) -> Result<(), ManifestError> {
    for source in sources(paths)? {
        visit_text(&source.name(), &source.text()?, visit)?;
    }
    Ok(())
}

/// [`visit_paths`] with the parsing spread over `workers` threads: each
/// file's manifests go through `map` on a worker, and `merge` receives what
/// it made in file and document order, on the calling thread, so the result
/// (and the first error reported) does not depend on the threads. Files are
/// taken a bounded batch at a time: what waits to be merged stays small.
pub fn map_paths<T: Send>(
    paths: &[PathBuf],
    workers: usize,
    map: &(dyn Fn(Manifest) -> Result<T, ManifestError> + Sync),
    merge: &mut dyn FnMut(T) -> Result<(), ManifestError>,
) -> Result<(), ManifestError> {
    let sources = sources(paths)?;
    let workers = workers.max(1);
    let parse = |source: &Source| -> Result<Vec<T>, ManifestError> {
        let mut made = Vec::new();
        visit_text(&source.name(), &source.text()?, &mut |m| {
            made.push(map(m)?);
            Ok(())
        })?;
        Ok(made)
    };
    for batch in sources.chunks(workers * BATCH_PER_WORKER) {
        for made in crate::parallel::map_in_order(batch, workers, &parse) {
            for item in made? {
                merge(item)?;
            }
        }
    }
    Ok(())
}

/// Files per worker read ahead of the merge: enough to even out files of
/// different sizes, few enough that what waits to be merged stays small.
const BATCH_PER_WORKER: usize = 64;

/// One input: stdin (read up front, once) or a file.
enum Source {
    Stdin(String),
    File(PathBuf),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::Stdin(_) => "-".to_owned(),
            Source::File(path) => path.display().to_string(),
        }
    }

    fn text(&self) -> Result<std::borrow::Cow<'_, str>, ManifestError> {
        match self {
            Source::Stdin(text) => Ok(text.as_str().into()),
            Source::File(path) => std::fs::read_to_string(path)
                .map(Into::into)
                .map_err(|source| ManifestError::Read {
                    path: path.display().to_string(),
                    source,
                }),
        }
    }
}

/// Every input of `paths` in order: `-` is stdin, directories are walked.
fn sources(paths: &[PathBuf]) -> Result<Vec<Source>, ManifestError> {
    let mut sources = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| ManifestError::Read {
                    path: "-".into(),
                    source,
                })?;
            sources.push(Source::Stdin(text));
            continue;
        }
        sources.extend(collect_files(path)?.into_iter().map(Source::File));
    }
    Ok(sources)
}

/// What [`visit_paths`] and [`visit_text`] call with each manifest.
pub type Visit<'a> = dyn FnMut(Manifest) -> Result<(), ManifestError> + 'a;

/// A named file is read whatever its extension; inside directories only
/// `.yaml`, `.yml` and `.json` files are.
fn collect_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            files.extend(collect_files(&entry)?);
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(entry);
        }
    }
    Ok(files)
}

/// Parses one file's text: a JSON value (or several), or YAML documents.
pub fn parse_text(file: &str, text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    visit_text(file, text, &mut |m| {
        manifests.push(m);
        Ok(())
    })?;
    Ok(manifests)
}

/// [`parse_text`], handing each manifest to `visit` as soon as its
/// document is parsed.
pub fn visit_text(file: &str, text: &str, visit: &mut Visit<'_>) -> Result<(), ManifestError> {
    let mut document = |index: usize, line: usize, value: Value| {
        let origin = Origin {
            file: file.to_owned(),
            document: index + 1,
            line,
        };
        flatten(origin, value, visit)
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        visit_json(file, text, &mut document)
    } else {
        visit_yaml(file, text, &mut document)
    }
}

type Document<'a> = dyn FnMut(usize, usize, Value) -> Result<(), ManifestError> + 'a;

fn visit_json(file: &str, text: &str, document: &mut Document<'_>) -> Result<(), ManifestError> {
    let mut lines = LineCounter::new(text);
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    for index in 0.. {
        let offset = stream.byte_offset();
        match stream.next() {
            None => break,
            Some(Ok(value)) => document(index, lines.line_of(offset), value)?,
            Some(Err(e)) => {
                return Err(ManifestError::Parse {
                    file: file.to_owned(),
                    document: index + 1,
                    problem: format!("invalid JSON: {e}"),
                })
            }
        }
    }
    Ok(())
}

fn visit_yaml(file: &str, text: &str, document: &mut Document<'_>) -> Result<(), ManifestError> {
    let starts = yaml_document_lines(text);
    for (index, yaml) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(yaml).map_err(|e| ManifestError::Parse {
            file: file.to_owned(),
            document: index + 1,
            problem: format!("invalid YAML: {e}"),
        })?;
        document(index, starts.get(index).copied().unwrap_or(1), value)?;
    }
    Ok(())
}

/// The first line of each YAML document: documents are separated by lines
/// starting with `---`; a separator with only blank or comment lines before
/// it opens the first document. One pass over the text.
fn yaml_document_lines(text: &str) -> Vec<usize> {
    let mut starts = vec![1];
    let mut only_comments_so_far = true;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            if only_comments_so_far {
                starts[0] = i + 2;
            } else {
                starts.push(i + 2);
            }
        }
        let trimmed = line.trim();
        if !(trimmed.is_empty() || trimmed.starts_with('#')) {
            only_comments_so_far = false;
        }
    }
    starts
}

/// Line numbers of byte offsets visited in increasing order, counting only
/// the newlines since the previous offset (linear in the text, not in the
/// text times the number of documents).
struct LineCounter<'a> {
    text: &'a str,
    offset: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(text: &'a str) -> Self {
        LineCounter {
            text,
            offset: 0,
            line: 1,
        }
    }

    /// The line of the first non-blank character at or after `offset`.
    fn line_of(&mut self, offset: usize) -> usize {
        let rest = &self.text[offset..];
        let target = offset + (rest.len() - rest.trim_start().len());
        if target >= self.offset {
            self.line += self.text.as_bytes()[self.offset..target]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.offset = target;
        }
        self.line
    }
}

/// Adds `value` (an object, a `kind: List`, or null for an empty document).
fn flatten(origin: Origin, value: Value, out: &mut Visit<'_>) -> Result<(), ManifestError> {
    let parse_err = |problem: String| ManifestError::Parse {
        file: origin.file.clone(),
        document: origin.document,
        problem,
    };
    match value {
        Value::Null => Ok(()),
        Value::Array(items) => items
            .into_iter()
            .try_for_each(|item| flatten(origin.clone(), item, out)),
        Value::Object(mut map) => {
            let field = |name: &str| {
                map.get(name)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let (api_version, kind) = (field("apiVersion"), field("kind"));
            if api_version.is_empty() || kind.is_empty() {
                return Err(parse_err(
                    "not a Kubernetes object: apiVersion and kind are required".into(),
                ));
            }
            if kind == "List" || (kind.ends_with("List") && map.contains_key("items")) {
                let Some(Value::Array(items)) = map.remove("items") else {
                    return Err(parse_err(format!("{kind} without an items array")));
                };
                return items
                    .into_iter()
                    .try_for_each(|item| flatten(origin.clone(), item, out));
            }
            out(Manifest {
                origin,
                api_version,
                kind,
                value: Value::Object(map),
            })
        }
        other => Err(parse_err(format!(
            "expected a Kubernetes object, found {}",
            match other {
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a boolean",
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_with_list_and_empty_documents() {
        let text = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: p}}\n- {apiVersion: v1, kind: Pod, metadata: {name: q}}\n";
        let m = parse_text("x.yaml", text).unwrap();
        let names: Vec<_> = m.iter().map(|m| (m.kind.as_str(), m.name())).collect();
        assert_eq!(names, [("Namespace", "a"), ("Pod", "p"), ("Pod", "q")]);
        assert_eq!(m[0].origin.line, 2);
        assert_eq!(m[1].origin.document, 3);
        assert_eq!(m[1].origin.line, 7);
    }

    #[test]
    fn document_lines_after_comments_separators_and_json_streams() {
        assert_eq!(yaml_document_lines("# c\n\n---\na: 1\n---\nb: 2\n"), [4, 6]);
        assert_eq!(yaml_document_lines("a: 1\n# c\n---\nb: 2\n"), [1, 4]);
        assert_eq!(yaml_document_lines("---\n---\na: 1\n"), [2, 3]);
        let many = "#\n---\n".repeat(3);
        assert_eq!(yaml_document_lines(&many), [3, 5, 7]);
        let text = "{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}\n\n  {\"apiVersion\":\"v1\",\"kind\":\"Pod\"}\n{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}";
        let m = parse_text("x.json", text).unwrap();
        let lines: Vec<_> = m.iter().map(|m| m.origin.line).collect();
        assert_eq!(lines, [1, 3, 4]);
    }

    /// Enough files for several batches on several workers, one broken
    /// file late in the set: the parallel read must see what the serial one
    /// sees, in the same order, and report the same (first) error.
    #[test]
    fn parallel_reading_keeps_file_and_document_order_and_the_first_error() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..70 {
            let text = format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{i}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p-{i}, namespace: ns-{i}}}\n"
            );
            std::fs::write(dir.path().join(format!("{i:03}.yaml")), text).unwrap();
        }
        let paths = [dir.path().to_owned()];
        let identity = |m: &Manifest| (m.origin.clone(), m.kind.clone(), m.name().to_owned());
        let serial: Vec<_> = load_paths(&paths).unwrap().iter().map(identity).collect();
        assert_eq!(serial.len(), 140);
        for workers in [1, 3, 8] {
            let mut parallel = Vec::new();
            map_paths(&paths, workers, &|m| Ok(identity(&m)), &mut |i| {
                parallel.push(i);
                Ok(())
            })
            .unwrap();
            assert_eq!(parallel, serial, "{workers} workers");
        }

        std::fs::write(dir.path().join("050.yaml"), "kind: [unclosed\n").unwrap();
        std::fs::write(dir.path().join("060.yaml"), "{not json").unwrap();
        let serial_error = load_paths(&paths).unwrap_err().to_string();
        let parallel_error = map_paths(&paths, 8, &|m| Ok(m), &mut |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(serial_error.contains("050.yaml"), "{serial_error}");
        assert_eq!(parallel_error, serial_error);
    }

    #[test]
    fn json_objects_and_arrays() {
        let m = parse_text("x.json", "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\",\"namespace\":\"shop\"}}").unwrap();
        assert_eq!(m[0].namespace(), Some("shop"));
    }

    #[test]
    fn errors_name_file_and_document() {
        let e = parse_text(
            "bad.yaml",
            "apiVersion: v1\nkind: Pod\n---\nkind: [unclosed\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("bad.yaml, document 2: invalid YAML"),
            "{e}"
        );
        let e = parse_text("bad.yaml", "just a string\n").unwrap_err();
        assert!(e.to_string().contains("document 1"), "{e}");
        let e = parse_text("bad.yaml", "metadata: {name: x}\n").unwrap_err();
        assert!(
            e.to_string().contains("apiVersion and kind are required"),
            "{e}"
        );
        let e = parse_text("bad.json", "{\"a\": ").unwrap_err();
        assert!(
            e.to_string().contains("bad.json, document 1: invalid JSON"),
            "{e}"
        );
    }
}
