//! Text splicing: the rewritten statement is the original text with a few
//! byte ranges replaced, never a re-print of the AST, so comments, hints,
//! quoting and literal spelling survive.

/// Replace `start..end` (bytes) with `text`; `start == end` inserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

impl Edit {
    pub fn insert(at: usize, text: impl Into<String>) -> Edit {
        Edit { start: at, end: at, text: text.into() }
    }
    pub fn replace(start: usize, end: usize, text: impl Into<String>) -> Edit {
        Edit { start, end, text: text.into() }
    }
    pub fn delete(start: usize, end: usize) -> Edit {
        Edit { start, end, text: String::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpliceError {
    #[error("edit {start}..{end} is outside the text or not on a char boundary")]
    OutOfRange { start: usize, end: usize },
    #[error("edits overlap at byte {0}")]
    Overlap(usize),
}

/// Apply `edits` to `src`. Insertions at the same offset keep their order.
pub fn apply(src: &str, edits: &[Edit]) -> Result<String, SpliceError> {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.start, e.end));
    let mut out = String::with_capacity(src.len() + edits.iter().map(|e| e.text.len()).sum::<usize>());
    let mut pos = 0;
    for e in sorted {
        if e.start > e.end || e.end > src.len() || !src.is_char_boundary(e.start) || !src.is_char_boundary(e.end) {
            return Err(SpliceError::OutOfRange { start: e.start, end: e.end });
        }
        if e.start < pos {
            return Err(SpliceError::Overlap(e.start));
        }
        out.push_str(&src[pos..e.start]);
        out.push_str(&e.text);
        pos = e.end;
    }
    out.push_str(&src[pos..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic() {
        let s = "UPDATE t SET a=1 WHERE id = 8";
        let out = apply(s, &[Edit::insert(23, "("), Edit::insert(29, ") AND (g)"), Edit::replace(15, 16, "a + 1")]).unwrap();
        assert_eq!(out, "UPDATE t SET a=a + 1 WHERE (id = 8) AND (g)");
        assert_eq!(apply(s, &[Edit::delete(0, 3), Edit::delete(2, 5)]), Err(SpliceError::Overlap(2)));
        assert!(apply("é", &[Edit::insert(1, "x")]).is_err());
        assert!(apply(s, &[Edit::insert(100, "x")]).is_err());
    }

    proptest! {
        /// Bytes outside the edits are never changed: removing the inserted
        /// texts from the output gives back the source minus replaced ranges.
        #[test]
        fn untouched_outside_edits(src in "[a-z é€;'\n]{0,60}", cuts in proptest::collection::vec((0usize..70, 0usize..5, "[A-Z()]{0,4}"), 0..5)) {
            let mut edits = Vec::new();
            let mut last = 0;
            let mut sorted = cuts.clone();
            sorted.sort();
            for (s, len, text) in sorted {
                let s = s.min(src.len());
                if s < last || !src.is_char_boundary(s) { continue; }
                let mut e = (s + len).min(src.len());
                while !src.is_char_boundary(e) { e += 1; }
                edits.push(Edit::replace(s, e, text));
                last = e;
            }
            let out = apply(&src, &edits).unwrap();
            // Rebuild expected by walking.
            let mut pos_out = 0;
            let mut pos_src = 0;
            for e in &edits {
                let keep = &src[pos_src..e.start];
                prop_assert_eq!(&out[pos_out..pos_out + keep.len()], keep);
                pos_out += keep.len();
                prop_assert_eq!(&out[pos_out..pos_out + e.text.len()], e.text.as_str());
                pos_out += e.text.len();
                pos_src = e.end;
            }
            prop_assert_eq!(&out[pos_out..], &src[pos_src..]);
        }
    }
}
