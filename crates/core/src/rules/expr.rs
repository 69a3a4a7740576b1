//! One CEL expression: the checks made when a rules file loads, and the fail-closed
//! evaluation.
//!
//! cel-interpreter 0.10 has sharp edges that this file exists to blunt:
//! - `Program::compile("")` panics, and so does evaluating a message construction
//!   (`Foo{a: 1}`) or a macro (`exists`, `all`, ...) over a value that is neither a list nor a
//!   map. The first two are refused at load; the last depends on the document. Every compile
//!   and every evaluation runs through [`contained`]: a panic is a refusal at load and a
//!   denial at evaluation, and prints nothing.
//! - Its ANTLR parser recurses deeply per bracket level: about 14 nested brackets exhaust a
//!   2 MiB thread stack in a debug build, and a stack overflow aborts the process. Bracket
//!   nesting is counted before compiling and bounded by [`MAX_NESTING`].
//! - `Program::references()` reports macro iteration variables (`r` in
//!   `user.roles.exists(r, ...)`) as free variables, so the names bound by macros are found
//!   in the text and allowed.

use std::collections::BTreeSet;

use cel_interpreter::{Context, Program, Value};

use super::contain::contained;

/// Longest expression, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// Deepest nesting of `(`, `[` and `{` in an expression. Each level costs the parser about
/// 150 KiB of stack in a debug build; real rules rarely pass 3.
pub const MAX_NESTING: usize = 8;

/// The macros that bind an iteration variable (their first argument).
const BINDING_MACROS: [&str; 6] = ["all", "exists", "exists_one", "existsOne", "map", "filter"];
/// The functions the interpreter's context registers (cel-interpreter 0.10's
/// `Context::default()` without its `regex` and `chrono` features). For `x.name` with no
/// such key in `x`, the interpreter yields the *function* `name` instead of an error, and a
/// function value compares unequal to everything and negates to `true`: `doc.size != 'x'`
/// would allow on a document without `size`. So a rule that reads a field by one of these
/// names with `.` is refused at load.
/// `a_field_named_like_a_function_is_refused_at_load` checks this list against the
/// interpreter.
pub(super) const FUNCTIONS: [&str; 11] =
    ["contains", "size", "max", "min", "startsWith", "endsWith", "string", "bytes", "double", "int", "uint"];

/// A compiled expression and the text it came from.
pub(super) struct Expr {
    source: String,
    /// Boxed: a `Program` is a few hundred bytes and the policies hold two each.
    program: Box<Program>,
}

impl Expr {
    /// Checks and compiles `source`; `variables` are the names it may use.
    ///
    /// The error is a sentence for the operator (it ends up after `collection "x": read: `).
    pub(super) fn compile(source: &str, variables: &[&str]) -> Result<Expr, String> {
        if source.trim().is_empty() {
            return Err("the expression is empty".into());
        }
        if source.len() > MAX_EXPRESSION_LEN {
            return Err(format!(
                "the expression is {} bytes long; at most {MAX_EXPRESSION_LEN} are allowed",
                source.len()
            ));
        }
        let scan = scan(source);
        if scan.max_nesting > MAX_NESTING {
            return Err(format!(
                "brackets nest {} deep; at most {MAX_NESTING} levels are allowed (split the rule with && or ||)",
                scan.max_nesting
            ));
        }
        // The parser panics on some malformed inputs (the empty text, refused above, and
        // some incomplete ones such as `doc.owner ==`): a panic is a refusal, never a crashed
        // server or a backtrace on the operator's terminal.
        let program = match contained(|| Program::compile(source).map_err(|e| e.to_string())) {
            Some(Ok(program)) => program,
            Some(Err(message)) => return Err(format!("does not parse: {}", one_line(&message))),
            None => return Err("does not parse (the CEL parser gave up on it)".into()),
        };
        if let Some(name) = scan.field_named_like_function {
            return Err(format!(
                "reads a field named `{name}`, like the function `{name}()`: this CEL interpreter gives \
                 the function, not an error, when such a field is missing, so no rule may read it"
            ));
        }
        if scan.constructs_message {
            return Err(
                "message construction (`Name{field: value}`) is not supported; use a map literal `{'k': v}`".into()
            );
        }
        let references = program.references();
        let mut unknown: Vec<&str> = references
            .variables()
            .into_iter()
            .filter(|name| !variables.contains(name) && !scan.binders.contains(name))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(format!(
                "unknown variable{} {}; the expression may use only {}",
                if unknown.len() == 1 { "" } else { "s" },
                quote_all(&unknown),
                quote_all(variables)
            ));
        }
        Ok(Expr { source: source.to_owned(), program: Box::new(program) })
    }

    /// The text, as written in the rules file.
    pub(super) fn source(&self) -> &str {
        &self.source
    }

    /// True only when the expression evaluates to the boolean `true` with these bindings.
    /// An error, any other value, or a panic inside the interpreter is false.
    pub(super) fn allows(&self, functions: &Context<'static>, bindings: &[(&str, &Value)]) -> bool {
        let mut ctx = functions.new_inner_scope();
        for (name, value) in bindings {
            ctx.add_variable_from_value(*name, (*value).clone());
        }
        // A panic leaves nothing behind that is read again: the child context is dropped
        // and `functions` is never written.
        let outcome = contained(|| self.program.execute(&ctx));
        matches!(outcome, Some(Ok(Value::Bool(true))))
    }
}

/// The parser's message on one line: its lines joined with "; ", blank ones dropped (the
/// message ends up in a one-line error after `collection "x": read: `).
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

fn quote_all(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// What a lexical pass over the text finds (strings and comments skipped).
#[derive(Debug, Default, PartialEq)]
struct Scan<'a> {
    /// Deepest nesting of `(`, `[` and `{`.
    max_nesting: usize,
    /// Names bound by macros: `v` in `x.exists(v, ...)`.
    binders: BTreeSet<&'a str>,
    /// An identifier directly followed by `{`: a protobuf message construction.
    constructs_message: bool,
    /// `.name` where `name` is one of [`FUNCTIONS`] and no `(` follows: a field read.
    field_named_like_function: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token<'a> {
    Ident(&'a str),
    Punct(u8),
}

/// Splits CEL text into identifiers and punctuation, skipping whitespace, numbers, string
/// literals (all quote forms and prefixes) and `//` comments. Not a parser: it only feeds
/// the nesting bound and the binder list, and the real parser still has the last word.
fn scan(src: &str) -> Scan<'_> {
    let b = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' || c == b'\'' {
            i = skip_string(b, i, false);
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &src[start..i];
            if matches!(b.get(i), Some(b'"' | b'\'')) && is_string_prefix(word) {
                i = skip_string(b, i, word.contains(['r', 'R']));
            } else {
                tokens.push(Token::Ident(word));
            }
        } else if c.is_ascii_digit() {
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || (b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)))
            {
                i += 1;
            }
        } else {
            if !c.is_ascii_whitespace() {
                tokens.push(Token::Punct(c));
            }
            i += 1;
        }
    }

    let mut scan = Scan::default();
    let mut depth = 0usize;
    for (k, token) in tokens.iter().enumerate() {
        match token {
            Token::Punct(b'(' | b'[' | b'{') => {
                depth += 1;
                scan.max_nesting = scan.max_nesting.max(depth);
            }
            Token::Punct(b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            Token::Ident(_) if tokens.get(k + 1) == Some(&Token::Punct(b'{')) => scan.constructs_message = true,
            _ => {}
        }
        if let [Token::Punct(b'.'), Token::Ident(name), rest @ ..] = &tokens[k..]
            && FUNCTIONS.contains(name)
            && rest.first() != Some(&Token::Punct(b'('))
        {
            scan.field_named_like_function.get_or_insert(name);
        }

        if let [Token::Punct(b'.'), Token::Ident(m), Token::Punct(b'('), Token::Ident(v), Token::Punct(b','), ..] =
            &tokens[k..]
            && BINDING_MACROS.contains(m)
        {
            scan.binders.insert(*v);
        }
    }
    scan
}

/// `r`, `b`, `rb`, `br` in either case: a string literal prefix when a quote follows.
fn is_string_prefix(word: &str) -> bool {
    matches!(word.to_ascii_lowercase().as_str(), "r" | "b" | "rb" | "br")
}

/// The index just past the string literal whose opening quote is at `start`.
fn skip_string(b: &[u8], start: usize, raw: bool) -> usize {
    let q = b[start];
    let triple = b.get(start + 1) == Some(&q) && b.get(start + 2) == Some(&q);
    let mut j = start + if triple { 3 } else { 1 };
    while j < b.len() {
        if !raw && b[j] == b'\\' {
            j += 2;
        } else if triple && b[j..].starts_with(&[q, q, q]) {
            return j + 3;
        } else if !triple && b[j] == q {
            return j + 1;
        } else if !triple && b[j] == b'\n' {
            // Unterminated: the parser reports it.
            return j;
        } else {
            j += 1;
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARS: [&str; 3] = ["user", "old", "doc"];

    #[test]
    fn nesting_inside_strings_and_comments_is_not_counted() {
        let src = "doc.name == '((((((((((' && doc.x == \"[[[[[[[[[[[\" // {{{{{{{{{{{{\n && r'''((((((((((((''' != ''";
        assert_eq!(scan(src).max_nesting, 0);
        assert_eq!(scan("f(g([{'a': (1)}]))").max_nesting, 5);
    }

    #[test]
    fn an_escaped_quote_does_not_end_a_string() {
        assert_eq!(scan(r"doc.a == 'it\'s (((((((((' && (true)").max_nesting, 1);
        // A raw string has no escapes: the backslash is a character and the quote ends it.
        assert_eq!(scan(r"doc.a == r'\' && (true)").max_nesting, 1);
    }

    #[test]
    fn macro_iteration_variables_are_found() {
        let s = scan("user.roles.exists(r, r == 'a') && doc.items.all(i, i.tags.exists_one(t, t == 'x'))");
        assert_eq!(s.binders.into_iter().collect::<Vec<_>>(), vec!["i", "r", "t"]);
        // A call that is not a macro binds nothing.
        assert!(scan("doc.name.startsWith(x, y)").binders.is_empty());
    }

    #[test]
    fn nesting_at_the_limit_compiles_on_an_ordinary_test_thread() {
        let src = format!("{}doc.owner == user.id{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(Expr::compile(&src, &VARS).is_ok());
        let deeper = format!("{}true{}", "[".repeat(MAX_NESTING + 1), "]".repeat(MAX_NESTING + 1));
        let err = Expr::compile(&deeper, &VARS).err().expect("too deep");
        assert!(err.contains("nest 9 deep"), "{err}");
    }

    #[test]
    fn a_variable_bound_by_a_macro_is_accepted_and_a_free_one_is_not() {
        assert!(Expr::compile("user.roles.exists(r, r.startsWith('site-'))", &VARS).is_ok());
        let err = Expr::compile("usr.id == doc.owner || r == 1", &VARS).err().expect("unknown");
        assert!(err.contains("unknown variables `r`, `usr`"), "{err}");
    }

    #[test]
    fn a_message_construction_is_refused_because_the_interpreter_panics_on_it() {
        let err = Expr::compile("doc == Foo{a: 1}", &VARS).err().expect("message");
        assert!(err.contains("message construction"), "{err}");
        // A map literal is fine.
        assert!(Expr::compile("{'a': 1}.a == 1", &VARS).is_ok());
    }

    #[test]
    fn blank_text_is_refused_without_reaching_the_parser_that_panics_on_it() {
        assert_eq!(Expr::compile("  \n", &VARS).err().as_deref(), Some("the expression is empty"));
    }
}
