//! Reading Kubernetes manifests: files, directories (recursively) and stdin;
//! multi-document YAML, JSON, and `kind: List`. Used by `meshgate audit` and
//! `serve --state-from`.

use std::io::Read;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

mod walk;
pub use walk::Note;
use walk::{Found, Walk};

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
/// What was skipped is logged.
pub fn visit_paths(paths: &[PathBuf], visit: &mut Visit<'_>) -> Result<(), ManifestError> {
    let (sources, mut notes) = sources(paths)?;
    for source in sources {
        source.visit(visit, &mut notes)?;
    }
    for note in notes {
        tracing::warn!(path = %note.path, skipped = %note.skipped, "manifest input skipped");
    }
    Ok(())
}

/// [`visit_paths`] with the parsing spread over `workers` threads: each
/// file's manifests go through `map` on a worker, and `merge` receives what
/// it made in file and document order, on the calling thread, so the result
/// (and the first error reported) does not depend on the threads. Files are
/// taken a bounded batch at a time: what waits to be merged stays small.
/// Returns what was skipped, in the same order.
pub fn map_paths<T: Send>(
    paths: &[PathBuf],
    workers: usize,
    map: &(dyn Fn(Manifest) -> Result<T, ManifestError> + Sync),
    merge: &mut dyn FnMut(T) -> Result<(), ManifestError>,
) -> Result<Vec<Note>, ManifestError> {
    let (sources, mut notes) = sources(paths)?;
    let workers = workers.max(1);
    type Made<T> = Result<(Vec<T>, Vec<Note>), ManifestError>;
    let parse = |source: &Source| -> Made<T> {
        let (mut made, mut notes) = (Vec::new(), Vec::new());
        source.visit(
            &mut |m| {
                made.push(map(m)?);
                Ok(())
            },
            &mut notes,
        )?;
        Ok((made, notes))
    };
    for batch in sources.chunks(workers * BATCH_PER_WORKER) {
        for made in crate::parallel::map_in_order(batch, workers, &parse) {
            let (made, skipped) = made?;
            notes.extend(skipped);
            for item in made {
                merge(item)?;
            }
        }
    }
    Ok(notes)
}

/// Files per worker read ahead of the merge: enough to even out files of
/// different sizes, few enough that what waits to be merged stays small.
const BATCH_PER_WORKER: usize = 64;

/// One input: stdin (read up front, once) or a file.
enum Source {
    Stdin(String),
    File(Found),
}

impl Source {
    fn name(&self) -> String {
        match self {
            Source::Stdin(_) => "-".to_owned(),
            Source::File(found) => found.path.display().to_string(),
        }
    }

    fn text(&self) -> Result<std::borrow::Cow<'_, str>, ManifestError> {
        match self {
            Source::Stdin(text) => Ok(text.as_str().into()),
            Source::File(found) => std::fs::read_to_string(&found.path)
                .map(Into::into)
                .map_err(|source| ManifestError::Read {
                    path: found.path.display().to_string(),
                    source,
                }),
        }
    }

    /// Hands every manifest to `visit`. In a file found in a directory, a
    /// document that is not a Kubernetes object is skipped into `notes`;
    /// in one named on the command line (or stdin) it is an error.
    fn visit(&self, visit: &mut Visit<'_>, notes: &mut Vec<Note>) -> Result<(), ManifestError> {
        let skip = match self {
            Source::File(found) if found.in_directory => Some(notes),
            _ => None,
        };
        visit_text_skipping(&self.name(), &self.text()?, visit, skip)
    }
}

/// Every input of `paths` in order: `-` is stdin, directories are walked;
/// and what the walk skipped.
fn sources(paths: &[PathBuf]) -> Result<(Vec<Source>, Vec<Note>), ManifestError> {
    let mut sources = Vec::new();
    let mut walk = Walk::default();
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
        walk.add(path)?;
        sources.extend(walk.files.drain(..).map(Source::File));
    }
    Ok((sources, walk.notes))
}

/// What [`visit_paths`] and [`visit_text`] call with each manifest.
pub type Visit<'a> = dyn FnMut(Manifest) -> Result<(), ManifestError> + 'a;

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
    visit_text_skipping(file, text, visit, None)
}

/// [`visit_text`]; with `skip`, documents that are not Kubernetes objects
/// are noted there instead of failing the read.
fn visit_text_skipping(
    file: &str,
    text: &str,
    visit: &mut Visit<'_>,
    mut skip: Option<&mut Vec<Note>>,
) -> Result<(), ManifestError> {
    let mut document = |index: usize, line: usize, value: Value| {
        let origin = Origin {
            file: file.to_owned(),
            document: index + 1,
            line,
        };
        if let Some(notes) = skip.as_deref_mut() {
            if let Some(why) = not_an_object(&value) {
                notes.push(Note {
                    path: file.to_owned(),
                    skipped: format!("document {}: {why}", index + 1),
                });
                return Ok(());
            }
        }
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

/// Why a document does not even claim to be a Kubernetes object: a
/// mapping with neither `apiVersion` nor `kind` (Helm values, a
/// kustomization without them, meshgate's config), or a scalar. One with
/// either field claims to be an object and is read as one: malformed, it is
/// an error, never skipped.
fn not_an_object(value: &Value) -> Option<&'static str> {
    match value {
        Value::Object(map) if !map.contains_key("apiVersion") && !map.contains_key("kind") => {
            Some("not a Kubernetes object (no apiVersion or kind)")
        }
        Value::String(_) | Value::Number(_) | Value::Bool(_) => {
            Some("not a Kubernetes object (a scalar)")
        }
        _ => None,
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

    /// In a walked directory, YAML that is not a Kubernetes object is
    /// skipped with a note; named, it is an error; and a document that has
    /// one of apiVersion and kind is an error either way.
    #[test]
    fn non_objects_are_skipped_only_inside_directories() {
        let dir = tempfile::tempdir().unwrap();
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";
        std::fs::write(dir.path().join("pod.yaml"), pod).unwrap();
        let values = dir.path().join("values.yaml");
        std::fs::write(&values, "replicaCount: 2\n---\njust text\n").unwrap();
        let paths = [dir.path().to_owned()];
        let mut read = Vec::new();
        let notes = map_paths(&paths, 2, &|m| Ok(m.kind), &mut |k| {
            read.push(k);
            Ok(())
        })
        .unwrap();
        assert_eq!(read, ["Pod"]);
        let notes: Vec<String> = notes.iter().map(ToString::to_string).collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].ends_with(
                "values.yaml: document 1: not a Kubernetes object (no apiVersion or kind)"
            ),
            "{notes:?}"
        );

        let e = map_paths(&[values], 2, &|m| Ok(m), &mut |_| Ok(())).unwrap_err();
        assert!(
            e.to_string().contains("apiVersion and kind are required"),
            "{e}"
        );

        std::fs::write(
            dir.path().join("half.yaml"),
            "kind: Deployment\nmetadata: {name: d}\n",
        )
        .unwrap();
        let e = map_paths(&paths, 2, &|m| Ok(m), &mut |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("half.yaml, document 1"), "{e}");
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
