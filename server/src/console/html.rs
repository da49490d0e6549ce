//! HTML that is escaped by default: [`html!`](crate::html) formats like `format!`, but every
//! argument is escaped unless it is already [`Html`], so text from the database (a tool's name,
//! a user's email, a prompt in an admin's text area) can never become markup.
//!
//! Arguments must be positional (`{}`), never captured (`{name}`): a captured identifier
//! would bypass the escaping, and `console_templates_never_capture` in this module's tests
//! fails the build's tests when one appears.

use std::fmt::{self, Display, Write};

/// Markup that is safe to send as is: made by [`html!`](crate::html) or [`Html::raw`] from a
/// constant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Html(pub(crate) String);

impl Html {
    /// Markup from a string literal of this program (never from data).
    pub fn raw(markup: &'static str) -> Html {
        Html(markup.to_owned())
    }

    pub fn push(&mut self, more: Html) {
        self.0.push_str(&more.0);
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromIterator<Html> for Html {
    fn from_iter<I: IntoIterator<Item = Html>>(iter: I) -> Html {
        let mut all = Html::default();
        for part in iter {
            all.push(part);
        }
        all
    }
}

/// How a value goes into markup: text is escaped, [`Html`] is not.
pub trait Render {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl Render for Html {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(&self.0)
    }
}

impl Render for str {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(self, out)
    }
}

impl Render for String {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape_into(self, out)
    }
}

impl<T: Render + ?Sized> Render for &T {
    fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).render(out)
    }
}

macro_rules! render_display {
    ($($ty:ty),*) => {$(
        impl Render for $ty {
            fn render(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Numbers and flags have no markup characters.
                write!(out, "{}", self)
            }
        }
    )*};
}
render_display!(i64, u64, u32, usize, bool);

/// The adapter [`html!`](crate::html) wraps every argument in.
pub struct Esc<'a, T: Render + ?Sized>(pub &'a T);

impl<T: Render + ?Sized> Display for Esc<'_, T> {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.render(out)
    }
}

fn escape_into(text: &str, out: &mut fmt::Formatter<'_>) -> fmt::Result {
    for c in text.chars() {
        match c {
            '&' => out.write_str("&amp;")?,
            '<' => out.write_str("&lt;")?,
            '>' => out.write_str("&gt;")?,
            '"' => out.write_str("&quot;")?,
            '\'' => out.write_str("&#39;")?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// Escapes text for HTML (element content and quoted attribute values).
pub fn escape(text: &str) -> String {
    format!("{}", Esc(text))
}

/// `format!` for markup: every argument is escaped unless it is [`Html`].
#[macro_export]
macro_rules! html {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {
        $crate::console::html::Html(format!($fmt $(, $crate::console::html::Esc(&$arg))*))
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn arguments_are_escaped_and_markup_is_not() {
        let name = "<script>alert('x')</script> & \"q\"";
        let inner = crate::html!("<b>{}</b>", "a<b");
        let page = crate::html!("<p title=\"{}\">{} {} {}</p>", name, name, inner, 42i64);
        assert_eq!(
            page.into_string(),
            "<p title=\"&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;\">\
             &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot; <b>a&lt;b</b> 42</p>"
        );
    }

    /// Every `html!` template in the console uses positional arguments only: `{name}` would
    /// capture a variable and skip the escaping.
    #[test]
    fn console_templates_never_capture() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // This file's own tests name the macro in strings, not as templates.
            if path.extension().is_none_or(|ext| ext != "rs") || path.ends_with("html.rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for (idx, template) in source.split("html!(").skip(1).enumerate() {
                let Some(literal) = template.trim_start().strip_prefix('"') else { continue };
                let literal = literal_body(literal);
                let mut chars = literal.chars().peekable();
                while let Some(c) = chars.next() {
                    if c == '{' {
                        match chars.peek() {
                            Some('{') => {
                                chars.next();
                            }
                            Some('}') | Some(':') => {}
                            other => panic!("{}: template {idx} captures `{{{other:?}`: use {{}}", path.display()),
                        }
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 20, "found the templates ({checked})");
    }

    /// A Rust string literal's body, up to its closing quote.
    fn literal_body(text: &str) -> String {
        let mut body = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    body.push(c);
                    if let Some(next) = chars.next() {
                        body.push(next);
                    }
                }
                '"' => break,
                c => body.push(c),
            }
        }
        body
    }
}
