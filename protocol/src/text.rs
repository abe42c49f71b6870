//! Text a peer sent, made safe to print: [`printable`] replaces every character that
//! could drive a terminal or reorder what it shows (C0 and C1 controls, ESC, DEL, the
//! bidirectional overrides and isolates) and bounds the length. The decode boundary
//! applies it to every free-text field of a message (`make_printable` on the messages)
//! and the network part to identify's strings, so whoever prints peer text later
//! (logs, `idlegrid peers`, the progress display, error messages) prints it as it is.

use std::borrow::Cow;

/// Longest printable text, in bytes (the marker of a cut included). Below
/// [`crate::limits::MAX_TEXT`], so a message made printable still passes `validate`.
pub const MAX_PRINTABLE: usize = 512;

/// Stands for each character that cannot be printed as it is.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Ends a text cut at [`MAX_PRINTABLE`].
const CUT: char = '…';

/// Characters that change how a terminal shows the text around them: controls
/// (C0, DEL, C1, which holds ESC's 8-bit twin CSI) and the bidirectional
/// embeddings, overrides, isolates and marks.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every unprintable character ([`is_unprintable`]) replaced (tabs and
/// line breaks by a space, the others by U+FFFD) and cut to at most [`MAX_PRINTABLE`]
/// bytes. Borrowed when `text` is fine as it is. Printable text stays the same:
/// `printable(printable(t)) == printable(t)`.
pub fn printable(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_PRINTABLE && !text.chars().any(is_unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_PRINTABLE + 4));
    for c in text.chars() {
        // One character past the bound is enough to know the text is cut.
        if out.len() > MAX_PRINTABLE {
            break;
        }
        out.push(match c {
            '\t' | '\n' | '\r' => ' ',
            c if is_unprintable(c) => REPLACEMENT,
            c => c,
        });
    }
    if out.len() > MAX_PRINTABLE {
        let mut end = MAX_PRINTABLE - CUT.len_utf8();
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push(CUT);
    }
    Cow::Owned(out)
}

/// Makes `text` printable in place (no allocation when it already is).
pub fn make_printable(text: &mut String) {
    if let Cow::Owned(clean) = printable(text) {
        *text = clean;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            printable("idlegrid/0.1.0 (linux)"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn escapes_and_overrides_are_replaced() {
        assert_eq!(printable("a\x1b[2Jb"), "a\u{FFFD}[2Jb");
        assert_eq!(printable("x\u{9b}31my"), "x\u{FFFD}31my");
        assert_eq!(printable("evil\u{202E}gpj.exe"), "evil\u{FFFD}gpj.exe");
        assert_eq!(printable("two\nlines\tand\rmore"), "two lines and more");
        assert_eq!(printable("del\x7f"), "del\u{FFFD}");
    }

    #[test]
    fn long_text_is_cut_with_a_marker() {
        let long = "a".repeat(2000);
        let out = printable(&long);
        assert_eq!(out.len(), MAX_PRINTABLE);
        assert!(out.ends_with(CUT));
        let exact = "b".repeat(MAX_PRINTABLE);
        assert_eq!(printable(&exact), exact.as_str());
    }

    proptest! {
        #[test]
        fn output_is_always_printable_and_bounded(text in any::<String>()) {
            let out = printable(&text);
            prop_assert!(!out.chars().any(is_unprintable), "{out:?}");
            prop_assert!(out.len() <= MAX_PRINTABLE);
            prop_assert_eq!(printable(&out), out.clone());
        }

        #[test]
        fn control_heavy_text_is_printable(
            text in proptest::collection::vec(
                prop_oneof![
                    Just('\x1b'), Just('\u{9b}'), Just('\x7f'), Just('\u{202E}'),
                    Just('\u{2067}'), Just('\n'), Just('é'), Just('日'), Just('a'),
                ],
                0..1200,
            ).prop_map(|v| v.into_iter().collect::<String>())
        ) {
            let out = printable(&text);
            prop_assert!(!out.chars().any(is_unprintable), "{out:?}");
            prop_assert!(out.len() <= MAX_PRINTABLE);
            prop_assert_eq!(printable(&out), out.clone());
        }
    }
}
