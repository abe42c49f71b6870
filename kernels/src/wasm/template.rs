//! The templates of `idlegrid run`: `--args "{i} 240"` and `-o "frames/f_{i:05}.png"`.
//!
//! A template is text with fields in braces: `{i}` (the item's index: the range value,
//! or the input file's position), `{name}` (the input file's name), `{stem}` (its name
//! without the extension), `{count}` (how many items the job has). `{i:05}` pads with
//! zeros to 5 digits, `{i:5}` with spaces; `{{` and `}}` are literal braces. A template
//! is parsed once ([`Template::parse`]), so a typo is one error before any work.

use std::fmt::Write;

/// The values one item fills a template with.
#[derive(Clone, Debug, Default)]
pub struct Fields<'a> {
    pub i: u64,
    pub count: u64,
    /// The input file's name, for jobs over files.
    pub name: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    I,
    Count,
    Name,
    Stem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field {
        field: Field,
        width: usize,
        zeros: bool,
    },
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`; the error names the bad field.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(format!("{text:?}: a lone '}}' (write '}}}}' for a brace)")),
                '{' => {
                    let mut inner = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => inner.push(c),
                            None => return Err(format!("{text:?}: '{{' without its '}}'")),
                        }
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(parse_field(text, &inner)?);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// Whether the template uses `{name}` or `{stem}` (which only jobs over files have).
    pub fn uses_names(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Field {
                    field: Field::Name | Field::Stem,
                    ..
                }
            )
        })
    }

    /// Whether the template uses `{i}`: an output template without it (or `{name}`)
    /// names one file for every item.
    pub fn uses_index(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Field {
                    field: Field::I,
                    ..
                }
            )
        })
    }

    /// The template filled with `fields`; `{name}`/`{stem}` without a file is an error.
    pub fn fill(&self, fields: &Fields<'_>) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            let (field, width, zeros) = match piece {
                Piece::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Piece::Field {
                    field,
                    width,
                    zeros,
                } => (field, *width, *zeros),
            };
            let value = match field {
                Field::I => fields.i.to_string(),
                Field::Count => fields.count.to_string(),
                Field::Name | Field::Stem => {
                    let name = fields.name.ok_or_else(|| {
                        "{name} and {stem} need input files (this job has a --range)".to_string()
                    })?;
                    if *field == Field::Name {
                        name.to_string()
                    } else {
                        std::path::Path::new(name)
                            .file_stem()
                            .map_or_else(|| name.to_string(), |s| s.to_string_lossy().into_owned())
                    }
                }
            };
            let pad = width.saturating_sub(value.chars().count());
            let fill = if zeros { '0' } else { ' ' };
            for _ in 0..pad {
                out.push(fill);
            }
            let _ = write!(out, "{value}");
        }
        Ok(out)
    }
}

fn parse_field(text: &str, inner: &str) -> Result<Piece, String> {
    let (name, spec) = inner.split_once(':').unwrap_or((inner, ""));
    let field = match name.trim() {
        "i" => Field::I,
        "count" => Field::Count,
        "name" => Field::Name,
        "stem" => Field::Stem,
        other => {
            return Err(format!(
                "{text:?}: unknown field {{{other}}} (known: {{i}}, {{name}}, {{stem}}, {{count}})"
            ))
        }
    };
    let zeros = spec.starts_with('0') && spec.len() > 1;
    let width = if spec.is_empty() {
        0
    } else {
        spec.parse::<usize>()
            .ok()
            .filter(|w| *w <= 64)
            .ok_or_else(|| {
                format!("{text:?}: {{{inner}}}: the width must be a number up to 64, e.g. {{i:05}}")
            })?
    };
    Ok(Piece::Field {
        field,
        width,
        zeros,
    })
}

/// Splits an `--args` template into words at whitespace; `"..."` or `'...'` keeps
/// spaces inside one word.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("{text:?}: a quote is not closed"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_padding_and_braces() {
        let t = Template::parse("frames/f_{i:05}_{{x}}_{count}.png").unwrap();
        let f = Fields {
            i: 42,
            count: 240,
            name: None,
        };
        assert_eq!(t.fill(&f).unwrap(), "frames/f_00042_{x}_240.png");
        let t = Template::parse("out/{stem}.json|{name}|{i:3}").unwrap();
        let f = Fields {
            i: 7,
            count: 1,
            name: Some("a.b.txt"),
        };
        assert_eq!(t.fill(&f).unwrap(), "out/a.b.json|a.b.txt|  7");
        assert!(t.uses_names());
        assert!(Template::parse("{j}").is_err());
        assert!(Template::parse("{i").is_err());
        assert!(Template::parse("a}").is_err());
        assert!(Template::parse("{i:x}").is_err());
        assert!(Template::parse("{stem}")
            .unwrap()
            .fill(&Fields::default())
            .is_err());
    }

    #[test]
    fn words() {
        assert_eq!(
            split_words(" {i}  240 'a b' \"\" ").unwrap(),
            vec!["{i}", "240", "a b", ""]
        );
        assert!(split_words("'open").is_err());
    }
}
