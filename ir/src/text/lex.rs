//! The lexer of the `.hir` text form. Whitespace and `//` comments separate tokens; newlines
//! carry no meaning.

use super::ParseError;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A bare word: a keyword, an op name, a number, a dtype, a symbolic dimension.
    Word(String),
    /// A string literal, unescaped.
    Str(String),
    /// `%name` or `%"name"`, with an optional `#k` that tells apart values of the same name.
    Ref(String, Option<u64>),
    /// `@N:k`: result `k` of the node at position `N` of the graph.
    Raw(usize, usize),
    /// One of `( ) { } [ ] , = : * ?`.
    Punct(char),
    /// `->`
    Arrow,
    Eof,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(_) => "a string".into(),
            Tok::Ref(..) | Tok::Raw(..) => "a value reference".into(),
            Tok::Punct(c) => format!("'{c}'"),
            Tok::Arrow => "'->'".into(),
            Tok::Eof => "the end of the text".into(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

pub(crate) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')
}

fn is_ref_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.')
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    col: usize,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }
    fn peek2(&self) -> Option<char> {
        self.chars.get(self.i + 1).copied()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.i).copied()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }
    fn err(&self, line: usize, col: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            line,
            col,
            message: msg.into(),
        }
    }

    fn skip_space(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') if self.peek2() == Some('/') => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let (line, col) = (self.line, self.col);
        self.bump(); // the opening quote
        let mut s = String::new();
        loop {
            let (l, c) = (self.line, self.col);
            match self.bump() {
                None => return Err(self.err(line, col, "unterminated string")),
                Some('"') => return Ok(s),
                Some('\\') => match self.bump() {
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some('u') => {
                        if self.bump() != Some('{') {
                            return Err(self.err(l, c, "expected '{' after \\u"));
                        }
                        let mut hex = String::new();
                        loop {
                            match self.bump() {
                                Some('}') => break,
                                Some(h) if h.is_ascii_hexdigit() && hex.len() < 8 => hex.push(h),
                                _ => return Err(self.err(l, c, "bad \\u{...} escape")),
                            }
                        }
                        let ch = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        s.push(ch.ok_or_else(|| {
                            self.err(l, c, format!("\\u{{{hex}}} is not a character"))
                        })?);
                    }
                    _ => return Err(self.err(l, c, "unknown escape in string")),
                },
                Some(ch) => s.push(ch),
            }
        }
    }

    fn digits(&mut self, what: &str) -> Result<usize, ParseError> {
        let (line, col) = (self.line, self.col);
        let mut s = String::new();
        while let Some(c) = self.peek().filter(char::is_ascii_digit) {
            s.push(c);
            self.bump();
        }
        s.parse()
            .map_err(|_| self.err(line, col, format!("expected {what} (a number)")))
    }

    fn token(&mut self) -> Result<Token, ParseError> {
        self.skip_space();
        let (line, col) = (self.line, self.col);
        let tok = match self.peek() {
            None => Tok::Eof,
            Some('"') => Tok::Str(self.string()?),
            Some('%') => {
                self.bump();
                let name = match self.peek() {
                    Some('"') => self.string()?,
                    Some(c) if is_ref_char(c) => {
                        let mut s = String::new();
                        while let Some(c) = self.peek().filter(|c| is_ref_char(*c)) {
                            s.push(c);
                            self.bump();
                        }
                        s
                    }
                    _ => return Err(self.err(line, col, "expected a name or a string after '%'")),
                };
                let dis = if self.peek() == Some('#') {
                    self.bump();
                    Some(self.digits("a value number after '#'")? as u64)
                } else {
                    None
                };
                Tok::Ref(name, dis)
            }
            Some('@') => {
                self.bump();
                let n = self.digits("a node position after '@'")?;
                if self.peek() != Some(':') {
                    return Err(self.err(self.line, self.col, "expected ':' in '@node:slot'"));
                }
                self.bump();
                Tok::Raw(n, self.digits("a result slot")?)
            }
            Some('-') if self.peek2() == Some('>') => {
                self.bump();
                self.bump();
                Tok::Arrow
            }
            Some(c) if "(){}[],=:*?".contains(c) => {
                self.bump();
                Tok::Punct(c)
            }
            Some(c) if is_word_char(c) => {
                let mut s = String::new();
                while let Some(c) = self.peek().filter(|c| is_word_char(*c)) {
                    if c == '-' && self.peek2() == Some('>') {
                        break;
                    }
                    s.push(c);
                    self.bump();
                }
                Tok::Word(s)
            }
            Some(c) => return Err(self.err(line, col, format!("unexpected character {c:?}"))),
        };
        Ok(Token { tok, line, col })
    }
}

/// Splits text into tokens; the last one is `Eof`.
pub(crate) fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lx = Lexer {
        chars: text.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
    };
    let mut out = Vec::new();
    loop {
        let t = lx.token()?;
        let eof = t.tok == Tok::Eof;
        out.push(t);
        if eof {
            return Ok(out);
        }
    }
}
