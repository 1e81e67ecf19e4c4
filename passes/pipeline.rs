//! Pipeline strings: parsing `name{key=value,…},…` into items, and printing
//! an instantiated pipeline back in canonical form.
//!
//! Option values are numbers, `true`/`false`, strings (bare or
//! double-quoted) or lists in brackets, nested at most [`MAX_DEPTH`] deep.
//! Printing spells out every option with its default and sorts keys, so
//! `parse(print(p))` prints the same string again: that is what makes the
//! `pipeline:` line of a quantize report replayable with `onnxq opt`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value as Json;

use super::{lookup, Pass, PassError};

/// Deepest nesting of lists in an option value. Options are flat lists of
/// names in practice; the bound only keeps a hostile pipeline string from
/// exhausting the stack (each level is one recursive call).
pub const MAX_DEPTH: usize = 32;

/// One pipeline element as written: a pass name and its raw options.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineItem {
    pub name: String,
    pub options: BTreeMap<String, Json>,
}

/// Parses a pipeline string into items (names are not checked here).
pub fn parse_pipeline(s: &str) -> Result<Vec<PipelineItem>, PassError> {
    let mut p = PipeParser {
        s,
        b: s.as_bytes(),
        i: 0,
        depth: 0,
    };
    let mut items = Vec::new();
    p.ws();
    if p.i == p.b.len() {
        return Ok(items);
    }
    loop {
        p.ws();
        let name = p.ident()?;
        p.ws();
        let mut options = BTreeMap::new();
        if p.peek() == Some(b'{') {
            p.i += 1;
            p.ws();
            if p.peek() == Some(b'}') {
                p.i += 1;
            } else {
                loop {
                    p.ws();
                    let key = p.ident()?;
                    p.ws();
                    p.expect(b'=')?;
                    p.ws();
                    let v = p.value()?;
                    if options.insert(key.clone(), v).is_some() {
                        return Err(p.err(&format!("option '{key}' given twice")));
                    }
                    p.ws();
                    match p.peek() {
                        Some(b',') => p.i += 1,
                        Some(b'}') => {
                            p.i += 1;
                            break;
                        }
                        _ => return Err(p.err("expected ',' or '}' after an option")),
                    }
                }
            }
        }
        items.push(PipelineItem { name, options });
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            None => break,
            _ => return Err(p.err("expected ',' between passes")),
        }
    }
    Ok(items)
}

struct PipeParser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    /// Lists currently open, bounded by [`MAX_DEPTH`].
    depth: usize,
}

impl PipeParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn err(&self, m: &str) -> PassError {
        PassError::Syntax {
            pipeline: self.s.to_string(),
            at: self.i,
            message: m.to_string(),
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), PassError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", c as char)))
        }
    }
    fn ident(&mut self) -> Result<String, PassError> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            self.i += 1;
        }
        if start == self.i {
            return Err(self.err("expected a name"));
        }
        Ok(self.s[start..self.i].to_string())
    }
    /// A bracketed list, the `[` at the cursor.
    fn list(&mut self) -> Result<Json, PassError> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']' in a list")),
            }
        }
    }

    fn value(&mut self) -> Result<Json, PassError> {
        match self.peek() {
            Some(b'[') => {
                if self.depth >= MAX_DEPTH {
                    return Err(self.err(&format!(
                        "option value nested deeper than {MAX_DEPTH} lists"
                    )));
                }
                self.depth += 1;
                let v = self.list();
                self.depth -= 1;
                v
            }
            Some(b'"') => {
                self.i += 1;
                let mut out = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.err("unterminated string")),
                        Some(b'"') => {
                            self.i += 1;
                            return Ok(Json::String(out));
                        }
                        Some(b'\\') => {
                            self.i += 1;
                            let ch = self.s[self.i..]
                                .chars()
                                .next()
                                .ok_or_else(|| self.err("unterminated string"))?;
                            out.push(ch);
                            self.i += ch.len_utf8();
                        }
                        Some(_) => {
                            let rest = &self.s[self.i..];
                            let ch = rest.chars().next().expect("invariant: not at end");
                            out.push(ch);
                            self.i += ch.len_utf8();
                        }
                    }
                }
            }
            _ => {
                let start = self.i;
                while matches!(self.peek(), Some(c) if !matches!(c, b',' | b'}' | b']' | b'{' | b'[' | b' '))
                {
                    self.i += 1;
                }
                let word = &self.s[start..self.i];
                if word.is_empty() {
                    return Err(self.err("expected a value"));
                }
                Ok(bare_value(word))
            }
        }
    }
}

/// A bare word as an option value: bool, integer, float, else string.
fn bare_value(w: &str) -> Json {
    match w {
        "true" => return Json::Bool(true),
        "false" => return Json::Bool(false),
        _ => {}
    }
    if let Ok(i) = w.parse::<i64>() {
        return Json::from(i);
    }
    if let Ok(f) = w.parse::<f64>() {
        if f.is_finite() {
            return Json::from(f);
        }
    }
    Json::String(w.to_string())
}

/// A pipeline of instantiated passes.
#[derive(Default)]
pub struct Pipeline {
    pub passes: Vec<Box<dyn Pass>>,
}

impl Pipeline {
    /// Parses and instantiates a pipeline string.
    pub fn parse(s: &str) -> Result<Pipeline, PassError> {
        Self::from_items(parse_pipeline(s)?)
    }

    /// Instantiates parsed items (checking names and options).
    pub fn from_items(items: Vec<PipelineItem>) -> Result<Pipeline, PassError> {
        let mut passes = Vec::new();
        for item in items {
            let info = lookup(&item.name)?;
            let opts = Json::Object(item.options.into_iter().collect());
            passes.push((info.make)(opts)?);
        }
        Ok(Pipeline { passes })
    }

    pub fn push(&mut self, p: Box<dyn Pass>) {
        self.passes.push(p);
    }

    /// The passes of `other` after this pipeline's.
    pub fn append(&mut self, other: Pipeline) {
        self.passes.extend(other.passes);
    }
}

impl fmt::Display for Pipeline {
    /// The canonical form: every option spelled out, keys sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.passes.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{}", p.name())?;
            if let Json::Object(o) = p.options() {
                if !o.is_empty() {
                    let mut keys: Vec<&String> = o.keys().collect();
                    keys.sort();
                    let parts: Vec<String> = keys
                        .iter()
                        .map(|k| format!("{k}={}", show_value(&o[*k])))
                        .collect();
                    write!(f, "{{{}}}", parts.join(","))?;
                }
            }
        }
        Ok(())
    }
}

fn show_value(v: &Json) -> String {
    match v {
        Json::String(s) => {
            if !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_./*".contains(&c))
                && !matches!(bare_value(s), Json::Bool(_) | Json::Number(_))
            {
                s.clone()
            } else {
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            }
        }
        Json::Array(a) => format!(
            "[{}]",
            a.iter().map(show_value).collect::<Vec<_>>().join(",")
        ),
        Json::Null => "null".into(),
        other => other.to_string(),
    }
}
