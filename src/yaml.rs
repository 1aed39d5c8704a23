//! Reading YAML so that every mistake can be pointed at: documents are split with their
//! source positions, each field path ("spec.phases[0].collection") maps to a line and
//! column, and typed parsing reports unknown fields and type errors by path.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{Event, Parser};

use crate::desired::Problem;

/// Parser options for a document of `len` bytes: the node and event budgets grow with
/// the input (a 100,000-update catalog is millions of nodes), while the alias limits that
/// guard against expansion bombs stay at their defaults.
pub fn options_for(len: usize) -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: len.max(1_000_000),
            max_nodes: len.max(250_000),
            max_total_scalar_bytes: (len * 2).max(64 << 20),
        },
    }
}

/// Deserialize one YAML document with [`options_for`] its size.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, options_for(text.len()))
}

/// One YAML document of a file, parsed to a JSON value, with the position of each field.
#[derive(Clone, Debug)]
pub struct RawDocument {
    pub file: String,
    /// 0-based index of the document in its file.
    pub index: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    pub value: serde_json::Value,
    positions: HashMap<String, (usize, usize)>,
}

impl RawDocument {
    /// Line and column (1-based) of a field path, or of its nearest present ancestor.
    pub fn position(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return (self.line, 1),
            }
        }
    }

    /// A problem located at `path` in this document.
    pub fn problem(&self, path: &str, message: impl Into<String>) -> Problem {
        let (line, column) = self.position(path);
        Problem {
            file: self.file.clone(),
            line,
            column,
            field: path.to_string(),
            message: message.into(),
            missing_reference: false,
        }
    }

    /// Deserialize the value at `path` (`""` for the whole document) into `T`, reporting
    /// unknown fields and type errors by field path and position.
    pub fn typed<T: DeserializeOwned>(&self, path: &str) -> Result<T, Vec<Problem>> {
        let value = if path.is_empty() {
            self.value.clone()
        } else {
            path.split('.').try_fold(&self.value, |v, k| v.get(k)).cloned().unwrap_or(serde_json::Value::Null)
        };
        let join = |sub: &str| -> String {
            match (path.is_empty(), sub.is_empty() || sub == ".") {
                (_, true) => path.to_string(),
                (true, false) => sub.to_string(),
                (false, false) if sub.starts_with('[') => format!("{path}{sub}"),
                (false, false) => format!("{path}.{sub}"),
            }
        };
        let mut unknown = Vec::new();
        let mut on_unknown = |p: serde_ignored::Path<'_>| unknown.push(p.to_string());
        let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
        let parsed: Result<T, _> = serde_path_to_error::deserialize(de);
        let mut problems: Vec<Problem> = unknown
            .iter()
            .map(|p| {
                let field = join(&ignored_path(p));
                self.problem(&field, "unknown field; check the spelling against `kubectl explain` or crds/")
            })
            .collect();
        match parsed {
            Ok(v) if problems.is_empty() => Ok(v),
            Ok(_) => Err(problems),
            Err(e) => {
                let field = join(&e.path().to_string());
                problems.push(self.problem(&field, e.inner().to_string()));
                Err(problems)
            }
        }
    }
}

/// serde_ignored prints paths as `a.b.0.c`; ours are `a.b[0].c`.
fn ignored_path(p: &str) -> String {
    let mut out = String::new();
    for part in p.split('.').filter(|s| !s.is_empty() && *s != "?") {
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// Positions of the fields of one document, by path.
type Positions = HashMap<String, (usize, usize)>;

/// A document found by pass 1: byte range, first line, field positions, non-empty.
struct Span1 {
    start: usize,
    end: usize,
    /// Line where the slice starts (the `---`, or the first line of an implicit document).
    slice_line: usize,
    line: usize,
    positions: Positions,
    nonempty: bool,
}

/// "error: line 5 column 3: duplicate key" → "duplicate key".
fn strip_position(message: &str) -> &str {
    let m = message.strip_prefix("error: ").unwrap_or(message);
    match m.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((pos, rest)) if pos.split(' ').next().is_some_and(|n| n.chars().all(|c| c.is_ascii_digit())) => rest,
        _ => m,
    }
}

enum Frame {
    Map { key: Option<String>, path: String },
    Seq { next: usize, path: String },
}

/// Split a YAML stream into documents, each parsed to JSON with field positions.
/// Empty documents (a stray `---`) are skipped.
pub fn parse_documents(file: &str, text: &str) -> Result<Vec<RawDocument>, Problem> {
    let syntax = |line: usize, column: usize, message: String| Problem {
        file: file.to_string(),
        line,
        column,
        field: String::new(),
        message: format!("YAML syntax: {message}"),
        missing_reference: false,
    };
    // Pass 1: byte range and field positions of each document, from parser events.
    let mut docs: Vec<Span1> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut current: Option<(usize, usize, Positions, bool)> = None;
    let mut slice_line = 1;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| syntax(e.marker().line(), e.marker().col() + 1, e.info().to_string()))?;
        let pos = (span.start.line(), span.start.col() + 1);
        // Where the node that starts here sits: mapping value, sequence item, or root.
        let node_path = |stack: &mut Vec<Frame>, positions: &mut Positions| -> Option<String> {
            match stack.last_mut() {
                None => Some(String::new()),
                Some(Frame::Map { key, path }) => {
                    key.take().map(|k| if path.is_empty() { k } else { format!("{path}.{k}") })
                }
                Some(Frame::Seq { next, path }) => {
                    let p = format!("{path}[{next}]");
                    *next += 1;
                    positions.entry(p.clone()).or_insert(pos);
                    Some(p)
                }
            }
        };
        match event {
            Event::DocumentStart(..) => {
                let start = span.start.byte_offset().unwrap_or(span.start.index());
                slice_line = span.start.line();
                current = Some((start, span.start.line(), HashMap::new(), false));
            }
            Event::DocumentEnd => {
                if let Some((start, line, positions, nonempty)) = current.take() {
                    let end = span.end.byte_offset().unwrap_or(span.end.index()).max(start);
                    docs.push(Span1 { start, end, slice_line, line, positions, nonempty });
                }
                stack.clear();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let Some((_, line, positions, nonempty)) = current.as_mut() else { continue };
                if stack.is_empty() {
                    *line = pos.0; // a document starts at its root node, not at `---`
                }
                *nonempty = true;
                let path = node_path(&mut stack, positions).unwrap_or_default();
                stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map { key: None, path }
                } else {
                    Frame::Seq { next: 0, path }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Scalar(value, ..) => {
                let Some((_, _, positions, nonempty)) = current.as_mut() else { continue };
                if stack.is_empty() && !matches!(value.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
                    *nonempty = true;
                }
                match stack.last_mut() {
                    Some(Frame::Map { key, path }) if key.is_none() => {
                        let p = if path.is_empty() { value.to_string() } else { format!("{path}.{value}") };
                        positions.entry(p).or_insert(pos);
                        *key = Some(value.to_string());
                    }
                    _ => {
                        node_path(&mut stack, positions);
                    }
                }
            }
            Event::Alias(..) => {
                if let Some((_, _, positions, _)) = current.as_mut() {
                    node_path(&mut stack, positions);
                }
            }
            _ => {}
        }
    }
    // Pass 2: each non-empty document to JSON, errors shifted to the stream's lines.
    let mut out = Vec::new();
    for (index, Span1 { start, end, slice_line, line, positions, .. }) in
        docs.into_iter().filter(|d| d.nonempty).enumerate()
    {
        let slice = &text[start..end];
        let value: serde_json::Value = from_str(slice).map_err(|e| {
            let (l, c) = e.location().map(|loc| (loc.line() as usize, loc.column() as usize)).unwrap_or((1, 1));
            // Positions are relative to the slice; the message must not repeat them.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            syntax(slice_line + l - 1, c, strip_position(first).to_string())
        })?;
        out.push(RawDocument { file: file.to_string(), index, line, value, positions });
    }
    Ok(out)
}

#[cfg(test)]
mod test {
    use super::*;

    const TWO_DOCS: &str = "\
kind: A
spec:
  name: x
  items:
    - a: 1
    - a: 2
      b: 3
---
---
kind: B
spec: {}
";

    #[test]
    fn documents_are_split_with_their_lines_and_field_positions() {
        let docs = parse_documents("f.yaml", TWO_DOCS).unwrap();
        assert_eq!(docs.len(), 2, "the empty document in the middle is skipped");
        assert_eq!(docs[0].value["spec"]["items"][1]["b"], 3);
        assert_eq!(docs[0].position("spec.name"), (3, 3));
        assert_eq!(docs[0].position("spec.items[1].b"), (7, 7));
        assert_eq!(docs[0].position("spec.items[1].missing"), (6, 7));
        assert_eq!(docs[1].value["kind"], "B");
        assert_eq!(docs[1].position("kind"), (10, 1));
    }

    #[test]
    fn errors_found_while_converting_count_lines_from_the_file_start() {
        let text = "# header\n# more\n---\nkind: A\nspec:\n  name: x\n  name: y\n";
        let err = parse_documents("f.yaml", text).unwrap_err();
        assert_eq!(err.line, 7, "{err}");
        assert!(!err.message.contains("line 5"), "no slice-relative position in {err}");
        let two = "kind: A\n---\n\nkind: B\nspec:\n  a: 1\n  a: 2\n";
        assert_eq!(parse_documents("f.yaml", two).unwrap_err().line, 7);
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let err = parse_documents("bad.yaml", "kind: A\nspec:\n  x: [1, 2\n").unwrap_err();
        assert_eq!(err.file, "bad.yaml");
        assert!(err.line >= 3, "{err}");
        assert!(err.message.starts_with("YAML syntax"), "{err}");
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Spec {
        name: String,
        items: Vec<Item>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Item {
        a: u32,
    }

    #[test]
    fn unknown_fields_and_type_errors_are_reported_by_path_and_line() {
        let docs = parse_documents("f.yaml", TWO_DOCS).unwrap();
        let problems = docs[0].typed::<Spec>("spec").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "spec.items[1].b");
        assert_eq!((problems[0].line, problems[0].column), (7, 7));
        assert!(problems[0].message.contains("unknown field"));

        let docs = parse_documents("f.yaml", "spec:\n  name: x\n  items:\n    - a: nope\n").unwrap();
        let problems = docs[0].typed::<Spec>("spec").unwrap_err();
        assert_eq!(problems[0].field, "spec.items[0].a");
        assert_eq!(problems[0].line, 4);
    }
}
