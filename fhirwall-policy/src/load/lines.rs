//! Finding lines and field paths in a YAML document's text, for problems the parser does not
//! place itself (cross-field and cross-document checks) and for naming the field of a parser
//! error. Heuristic by indentation, which block-style policy files follow; when nothing is
//! found the caller falls back to the document's first line.

/// The 1-based line of a field path such as `scopes[2]`, `credentials.inject.value_file` or
/// `patient`. Each segment is a key below the previous one (deeper indentation); `[n]` picks
/// the n-th block list item under it (flow lists `[a, b]` stay on the key's line).
pub(super) fn field_line(text: &str, path: &str) -> Option<u64> {
    let lines: Vec<&str> = text.lines().collect();
    let mut at = 0usize;
    let mut parent: Option<usize> = None;
    for segment in path.split('.') {
        let (key, index) = match segment.split_once('[') {
            Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        // Below a parent key, look only inside its block (deeper lines).
        let skip = if parent.is_some() { at + 1 } else { 0 };
        let found = lines
            .iter()
            .enumerate()
            .skip(skip)
            .take_while(|(_, l)| parent.is_none_or(|p| is_blank(l) || indentation(l) > p))
            .find(|(_, l)| {
                (parent.is_some() || indentation(l) == 0)
                    && l.trim_start()
                        .strip_prefix(key)
                        .is_some_and(|r| r.starts_with(':'))
            });
        let (line_no, line) = found?;
        let key_indent = indentation(line);
        at = line_no;
        parent = Some(key_indent);
        if let Some(n) = index {
            at = nth_item(&lines, line_no, key_indent, n).unwrap_or(line_no);
        }
    }
    Some(at as u64 + 1)
}

/// The line index of the n-th `- ` item of the block list under the key at `key_line` (items
/// of lists nested inside its items do not count).
fn nth_item(lines: &[&str], key_line: usize, key_indent: usize, n: usize) -> Option<usize> {
    let mut item_indent = None;
    lines
        .iter()
        .enumerate()
        .skip(key_line + 1)
        .take_while(|(_, l)| {
            is_blank(l) || indentation(l) > key_indent || is_item_at(l, key_indent)
        })
        .filter(|(_, l)| !is_blank(l) && l.trim_start().starts_with('-'))
        .filter(|(_, l)| *item_indent.get_or_insert(indentation(l)) == indentation(l))
        .map(|(i, _)| i)
        .nth(n)
}

/// The dotted path of keys that encloses the 1-based `line` (`credentials.inject.value_file`
/// for a value on that line), for naming the field of a parser error.
pub(super) fn field_at(text: &str, line: u64) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let mut keys = Vec::new();
    let mut limit: Option<usize> = None;
    for l in lines.get(..=index)?.iter().rev() {
        if is_blank(l) {
            continue;
        }
        let indent = indentation(l);
        if limit.is_some_and(|lim| indent >= lim) {
            continue;
        }
        let body = l.trim_start().trim_start_matches("- ");
        if let Some((key, _)) = body.split_once(':')
            && !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            keys.push(key.to_owned());
        }
        limit = Some(indent);
        if indent == 0 {
            break;
        }
    }
    keys.reverse();
    (!keys.is_empty()).then(|| keys.join("."))
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

fn is_item_at(line: &str, indent: usize) -> bool {
    indentation(line) == indent && line.trim_start().starts_with("- ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: lab\n\
                       scopes:\n\
                       \x20 - system/Observation.rs\n\
                       \x20 # a comment\n\
                       \x20 - system/DiagnosticReport.cu\n\
                       credentials:\n\
                       \x20 inject:\n\
                       \x20   header: Authorization\n\
                       \x20   value_file: /etc/x\n\
                       tenants: [a, b]\n\
                       patient:\n\
                       \x20 mode: any\n";

    #[test]
    fn paths_point_at_their_lines() {
        let table: &[(&str, Option<u64>)] = &[
            ("name", Some(1)),
            ("scopes", Some(2)),
            ("scopes[0]", Some(3)),
            ("scopes[1]", Some(5)),
            ("scopes[7]", Some(2)),
            ("credentials.inject.value_file", Some(9)),
            ("tenants[1]", Some(10)),
            ("patient.mode", Some(12)),
            ("mode", None),
            ("missing", None),
        ];
        for (path, line) in table {
            assert_eq!(field_line(DOC, path), *line, "{path}");
        }
    }

    #[test]
    fn lines_map_back_to_paths() {
        let table: &[(u64, Option<&str>)] = &[
            (1, Some("name")),
            (3, Some("scopes")),
            (5, Some("scopes")),
            (9, Some("credentials.inject.value_file")),
            (12, Some("patient.mode")),
            (99, None),
        ];
        for (line, path) in table {
            assert_eq!(field_at(DOC, *line).as_deref(), *path, "line {line}");
        }
    }
}
