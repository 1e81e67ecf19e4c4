//! The lexer: tokens read on demand from the source bytes, and the
//! positions every parse error is reported at.
//!
//! There is no token stream: the parser asks for the token it expects next
//! (`eat(b'(')`, `ident(..)`, `number(..)`), and each request first skips
//! whitespace and comment lines. That keeps the lexer context free of the
//! grammar while letting the parser decide, e.g., that `float` starts a type
//! but `"float"` is a name.

use super::ParseError;
use crate::proto::attribute_proto::AttributeType;

pub(super) type PResult<T> = Result<T, ParseError>;

/// Words that start a type besides the element type names (`float`, ...).
pub(super) const KEYWORDS: [&str; 6] = [
    "seq",
    "map",
    "optional",
    "sparse_tensor",
    "opaque",
    "undefined",
];

/// Attribute type names as written after `name:`.
pub(super) const ATTR_TYPES: [(&str, AttributeType); 14] = [
    ("float", AttributeType::Float),
    ("int", AttributeType::Int),
    ("string", AttributeType::String),
    ("tensor", AttributeType::Tensor),
    ("graph", AttributeType::Graph),
    ("sparse_tensor", AttributeType::SparseTensor),
    ("type_proto", AttributeType::TypeProto),
    ("floats", AttributeType::Floats),
    ("ints", AttributeType::Ints),
    ("strings", AttributeType::Strings),
    ("tensors", AttributeType::Tensors),
    ("graphs", AttributeType::Graphs),
    ("sparse_tensors", AttributeType::SparseTensors),
    ("type_protos", AttributeType::TypeProtos),
];

pub(super) fn attr_type_name(k: AttributeType) -> &'static str {
    ATTR_TYPES
        .iter()
        .find(|(_, t)| *t == k)
        .map(|(n, _)| *n)
        .unwrap_or("undefined")
}

/// The source and the cursor into it.
pub(super) struct Lexer<'s> {
    pub(super) src: &'s [u8],
    pub(super) pos: usize,
}

impl<'s> Lexer<'s> {
    pub(super) fn new(text: &'s str) -> Self {
        Lexer {
            src: text.as_bytes(),
            pos: 0,
        }
    }

    pub(super) fn loc(&self, pos: usize) -> (usize, usize) {
        let before = &self.src[..pos.min(self.src.len())];
        let line = before.iter().filter(|&&c| c == b'\n').count() + 1;
        let start = before
            .iter()
            .rposition(|&c| c == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let col = before[start..]
            .iter()
            .filter(|&&c| (c & 0xc0) != 0x80)
            .count()
            + 1;
        (line, col)
    }

    pub(super) fn err_at(&self, pos: usize, msg: impl Into<String>) -> ParseError {
        let (line, col) = self.loc(pos);
        ParseError {
            line,
            col,
            msg: msg.into(),
        }
    }

    /// "expected X, found Y" at the next token.
    pub(super) fn expected<T>(&mut self, what: &str) -> PResult<T> {
        self.ws();
        let found = self.found();
        Err(self.err_at(self.pos, format!("expected {what}, found {found}")))
    }

    fn found(&self) -> String {
        let rest = &self.src[self.pos..];
        match rest.first() {
            None => "end of input".into(),
            Some(b'"') => "a string".into(),
            Some(c) if c.is_ascii_alphanumeric() || *c == b'_' => {
                let n = rest
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'.')
                    .count();
                format!("'{}'", String::from_utf8_lossy(&rest[..n]))
            }
            Some(_) => {
                let s = String::from_utf8_lossy(&rest[..rest.len().min(4)])
                    .chars()
                    .next()
                    .unwrap_or('?');
                format!("'{s}'")
            }
        }
    }

    fn at_line_start(&self, pos: usize) -> bool {
        self.src[..pos]
            .iter()
            .rev()
            .take_while(|&&c| c != b'\n')
            .all(|&c| c == b' ' || c == b'\t' || c == b'\r')
    }

    /// Skips whitespace and comment lines.
    pub(super) fn ws(&mut self) {
        loop {
            while self.pos < self.src.len() && self.src[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if self.pos < self.src.len()
                && self.src[self.pos] == b'#'
                && self.at_line_start(self.pos)
            {
                while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
                    self.pos += 1;
                }
                continue;
            }
            break;
        }
    }

    pub(super) fn at_end(&mut self) -> bool {
        self.ws();
        self.pos >= self.src.len()
    }

    pub(super) fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.src.get(self.pos).copied()
    }

    pub(super) fn peek_is_ident_start(&mut self) -> bool {
        matches!(self.peek(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
    }

    pub(super) fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect(&mut self, c: u8, what: &str) -> PResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            self.expected(&format!("'{}' {what}", c as char))
        }
    }

    pub(super) fn peek_word(&mut self) -> Option<&'s str> {
        self.ws();
        let rest = &self.src[self.pos..];
        match rest.first() {
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
            _ => return None,
        }
        let n = rest
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .count();
        std::str::from_utf8(&rest[..n]).ok()
    }

    pub(super) fn ident_opt(&mut self) -> Option<String> {
        let w = self.peek_word()?;
        self.pos += w.len();
        Some(w.to_string())
    }

    pub(super) fn ident(&mut self, what: &str) -> PResult<String> {
        match self.ident_opt() {
            Some(s) => Ok(s),
            None => self.expected(what),
        }
    }

    pub(super) fn string_lit(&mut self) -> PResult<Vec<u8>> {
        self.ws();
        let start = self.pos;
        if self.src.get(self.pos) != Some(&b'"') {
            return self.expected("a string");
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.src.get(self.pos) {
                None => {
                    return Err(self.err_at(start, "unterminated string: expected a closing '\"'"))
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.src.get(self.pos) {
                        None => {
                            return Err(
                                self.err_at(start, "unterminated string: expected a closing '\"'")
                            )
                        }
                        Some(&c) => out.push(c),
                    }
                    self.pos += 1;
                }
                Some(&c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    pub(super) fn string(&mut self, what: &str) -> PResult<String> {
        if self.peek() != Some(b'"') {
            return self.expected(what);
        }
        Ok(String::from_utf8_lossy(&self.string_lit()?).into_owned())
    }

    pub(super) fn quotable_id(&mut self, what: &str) -> PResult<String> {
        if self.peek() == Some(b'"') {
            return Ok(String::from_utf8_lossy(&self.string_lit()?).into_owned());
        }
        self.ident(what)
    }

    pub(super) fn peek_is_quotable(&mut self) -> bool {
        self.peek() == Some(b'"') || self.peek_is_ident_start()
    }

    /// A number literal's text: `-?digits(.digits)?(e[+-]?digits)?` or
    /// `-?(nan|inf|infinity)`.
    pub(super) fn number(&mut self, what: &str) -> PResult<(String, usize)> {
        self.ws();
        let start = self.pos;
        let s = self.src;
        let mut p = self.pos;
        if s.get(p) == Some(&b'-') {
            p += 1;
        }
        if s.get(p).is_some_and(|c| c.is_ascii_alphabetic()) {
            let n = s[p..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            let w = String::from_utf8_lossy(&s[p..p + n]).to_ascii_lowercase();
            if matches!(w.as_str(), "nan" | "inf" | "infinity") {
                self.pos = p + n;
                return Ok((
                    String::from_utf8_lossy(&s[start..self.pos]).into_owned(),
                    start,
                ));
            }
            return self.expected(what);
        }
        let digits = |p: &mut usize| {
            let b = *p;
            while s.get(*p).is_some_and(|c| c.is_ascii_digit()) {
                *p += 1;
            }
            *p > b
        };
        if !digits(&mut p) {
            return self.expected(what);
        }
        if s.get(p) == Some(&b'.') {
            p += 1;
            digits(&mut p);
        }
        if matches!(s.get(p), Some(b'e' | b'E')) {
            let mut q = p + 1;
            if matches!(s.get(q), Some(b'+' | b'-')) {
                q += 1;
            }
            if digits(&mut q) {
                p = q;
            }
        }
        self.pos = p;
        Ok((String::from_utf8_lossy(&s[start..p]).into_owned(), start))
    }

    pub(super) fn int(&mut self, what: &str) -> PResult<i64> {
        let (t, at) = self.number(what)?;
        t.parse::<i64>()
            .map_err(|_| self.err_at(at, format!("expected {what}, found '{t}'")))
    }

    /// The `=>` between a graph's or function's inputs and outputs.
    pub(super) fn arrow(&mut self) -> PResult<()> {
        self.ws();
        if self.src[self.pos..].starts_with(b"=>") {
            self.pos += 2;
            Ok(())
        } else {
            self.expected("'=>' between inputs and outputs")
        }
    }
}

/// Whether a number literal's text is a float (not an integer).
pub(super) fn is_float_text(t: &str) -> bool {
    t.contains(['.', 'e', 'E']) || t.bytes().any(|c| c.is_ascii_alphabetic())
}

pub(super) fn parse_float(t: &str) -> Option<f64> {
    let l = t.to_ascii_lowercase();
    let (neg, body) = match l.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, l.as_str()),
    };
    let v = match body {
        "nan" => f64::NAN,
        "inf" | "infinity" => f64::INFINITY,
        _ => body.parse::<f64>().ok()?,
    };
    Some(if neg { -v } else { v })
}

/// Parses an f32 directly (not via f64, which could double-round).
pub(super) fn parse_f32(t: &str) -> Option<f32> {
    let l = t.to_ascii_lowercase();
    let (neg, body) = match l.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, l.as_str()),
    };
    let v = match body {
        "nan" => f32::NAN,
        "inf" | "infinity" => f32::INFINITY,
        _ => body.parse::<f32>().ok()?,
    };
    Some(if neg { -v } else { v })
}
