//! The block YAML subset of manifests, read into JSON values whose
//! scalars are all strings (or `null`); the typed decoding gives them
//! their types.

use serde_json::{Map, Value};

struct Line<'a> {
    indent: usize,
    text: &'a str,
    no: usize,
}

pub(super) fn parse(src: &str) -> Result<Value, String> {
    let mut lines = Vec::new();
    let mut started = false;
    for (i, raw) in src.lines().enumerate() {
        let no = i + 1;
        let body = strip_comment(raw).trim_end();
        if body.trim().is_empty() {
            continue;
        }
        let indent = body.len() - body.trim_start_matches(' ').len();
        if body[indent..].starts_with('\t') {
            return Err(format!("line {no}: tab indentation"));
        }
        let text = &body[indent..];
        if indent == 0 && (text == "---" || text == "...") {
            if started || text == "..." {
                return Err(format!("line {no}: only one YAML document is allowed"));
            }
            started = true;
            continue;
        }
        started = true;
        lines.push(Line { indent, text, no });
    }
    if lines.is_empty() {
        return Ok(Value::Null);
    }
    let mut p = Parser { lines, at: 0 };
    let indent = p.lines[0].indent;
    let v = p.node(indent)?;
    if let Some(l) = p.lines.get(p.at) {
        return Err(format!("line {}: unexpected indentation", l.no));
    }
    Ok(v)
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    at: usize,
}

impl<'a> Parser<'a> {
    fn node(&mut self, indent: usize) -> Result<Value, String> {
        let l = &self.lines[self.at];
        if l.text == "-" || l.text.starts_with("- ") {
            self.seq(indent)
        } else {
            self.map(indent, None)
        }
    }

    fn seq(&mut self, indent: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        while let Some(l) = self.lines.get(self.at) {
            if l.indent != indent || !(l.text == "-" || l.text.starts_with("- ")) {
                break;
            }
            let no = l.no;
            let rest = l.text[1..].trim_start_matches(' ');
            let col = indent + (l.text.len() - rest.len());
            self.at += 1;
            if rest.is_empty() {
                items.push(self.child(indent, false)?);
            } else if let Some((k, v)) = key_value(rest, no)? {
                items.push(self.map(col, Some((k, v, no)))?);
            } else {
                items.push(scalar_or_flow(rest, no)?);
                self.no_continuation(indent, no)?;
            }
        }
        Ok(Value::Array(items))
    }

    fn map(
        &mut self,
        indent: usize,
        mut first: Option<(String, &'a str, usize)>,
    ) -> Result<Value, String> {
        let mut map = Map::new();
        loop {
            let (key, value, no) = match first.take() {
                Some(f) => f,
                None => {
                    let Some(l) = self.lines.get(self.at) else {
                        break;
                    };
                    if l.indent != indent || l.text == "-" || l.text.starts_with("- ") {
                        break;
                    }
                    let no = l.no;
                    let Some((k, v)) = key_value(l.text, no)? else {
                        return Err(format!("line {no}: expected `key: value`"));
                    };
                    self.at += 1;
                    (k, v, no)
                }
            };
            let v = if value.is_empty() {
                self.child(indent, true)?
            } else {
                let v = scalar_or_flow(value, no)?;
                self.no_continuation(indent, no)?;
                v
            };
            if map.insert(key.clone(), v).is_some() {
                return Err(format!("line {no}: key {key:?} already defined"));
            }
        }
        Ok(Value::Object(map))
    }

    /// The block value after `key:` or `-` with nothing on the line:
    /// deeper lines, or a sequence at the key's own indentation.
    fn child(&mut self, indent: usize, in_map: bool) -> Result<Value, String> {
        match self.lines.get(self.at) {
            Some(l) if l.indent > indent => {
                let i = l.indent;
                self.node(i)
            }
            Some(l)
                if in_map && l.indent == indent && (l.text == "-" || l.text.starts_with("- ")) =>
            {
                self.seq(indent)
            }
            _ => Ok(Value::Null),
        }
    }

    fn no_continuation(&self, indent: usize, no: usize) -> Result<(), String> {
        match self.lines.get(self.at) {
            Some(l) if l.indent > indent => Err(format!(
                "line {}: multi-line scalars are not supported (after line {no})",
                l.no
            )),
            _ => Ok(()),
        }
    }
}

fn strip_comment(line: &str) -> &str {
    let (mut single, mut double, mut prev_space) = (false, false, true);
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if double => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c == ' ' || c == '\t';
    }
    line
}

/// `key: value` (value possibly empty), or `None` when `text` is not a
/// mapping entry.
fn key_value(text: &str, no: usize) -> Result<Option<(String, &str)>, String> {
    if text.starts_with('?') {
        return Err(format!("line {no}: complex keys are not supported"));
    }
    let (key, rest) = if text.starts_with('"') || text.starts_with('\'') {
        let end = quoted_end(text).ok_or_else(|| format!("line {no}: unterminated quote"))?;
        let after = &text[end..];
        if after == ":" || after.starts_with(": ") {
            (unquote(&text[..end], no)?, &after[1..])
        } else {
            return Ok(None);
        }
    } else if text.starts_with(['[', '{']) {
        return Ok(None);
    } else {
        let Some(i) = text
            .find(": ")
            .or_else(|| text.ends_with(':').then(|| text.len() - 1))
        else {
            return Ok(None);
        };
        let key = text[..i].trim_end();
        check_plain(key, no)?;
        (key.to_owned(), &text[i + 1..])
    };
    Ok(Some((key, rest.trim())))
}

fn quoted_end(s: &str) -> Option<usize> {
    let q = s.as_bytes()[0];
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() {
        if q == b'"' && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

fn unquote(s: &str, no: usize) -> Result<String, String> {
    let inner = &s[1..s.len() - 1];
    if s.starts_with('\'') {
        return Ok(inner.replace("''", "'"));
    }
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('/') => out.push('/'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let c = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("line {no}: bad \\u escape"))?;
                out.push(c);
            }
            _ => return Err(format!("line {no}: unsupported escape in a quoted string")),
        }
    }
    Ok(out)
}

fn check_plain(s: &str, no: usize) -> Result<(), String> {
    if s.starts_with(['&', '*', '!', '|', '>', '%', '@', '`']) {
        return Err(format!(
            "line {no}: {s:?}: anchors, aliases, tags and block scalars are not supported"
        ));
    }
    Ok(())
}

fn plain(s: &str, no: usize) -> Result<Value, String> {
    check_plain(s, no)?;
    if s.contains(": ") || s.ends_with(':') {
        return Err(format!(
            "line {no}: {s:?}: a nested mapping must be on its own line"
        ));
    }
    Ok(match s {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        s => Value::String(s.to_owned()),
    })
}

fn scalar_or_flow(s: &str, no: usize) -> Result<Value, String> {
    if s.starts_with('"') || s.starts_with('\'') {
        let end = quoted_end(s).ok_or_else(|| format!("line {no}: unterminated quote"))?;
        if end != s.len() {
            return Err(format!("line {no}: text after a quoted string"));
        }
        return Ok(Value::String(unquote(s, no)?));
    }
    if s == "{}" {
        return Ok(Value::Object(Map::new()));
    }
    if s.starts_with('{') {
        return Err(format!("line {no}: flow mappings are not supported"));
    }
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("line {no}: a flow sequence must end on its line"))?;
        let mut items = Vec::new();
        let mut rest = inner.trim();
        while !rest.is_empty() {
            let (item, after) = if rest.starts_with('"') || rest.starts_with('\'') {
                let end =
                    quoted_end(rest).ok_or_else(|| format!("line {no}: unterminated quote"))?;
                (
                    Value::String(unquote(&rest[..end], no)?),
                    rest[end..].trim_start(),
                )
            } else {
                if rest.starts_with(['[', '{']) {
                    return Err(format!(
                        "line {no}: nested flow collections are not supported"
                    ));
                }
                let end = rest.find(',').unwrap_or(rest.len());
                (plain(rest[..end].trim(), no)?, &rest[end..])
            };
            items.push(item);
            rest = match after.strip_prefix(',') {
                Some(r) => r.trim_start(),
                None if after.is_empty() => after,
                None => return Err(format!("line {no}: expected `,` in a flow sequence")),
            };
        }
        return Ok(Value::Array(items));
    }
    plain(s, no)
}
