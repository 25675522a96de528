//! Soft labels across tokenizers: the teacher's tokens and the student's tokens of the same
//! response text, matched on byte spans.
//!
//! Both tokenizations spell the same bytes, so each is a partition of the response's byte
//! range. Cutting the range wherever both partitions have a boundary gives the finest spans
//! that each side covers with whole tokens:
//!
//! - a span of one teacher token and one student token is **one-to-one**: the two tokens spell
//!   the same bytes, so the teacher's top-k alternatives at that position whose bytes are a
//!   single student token carry over with their probabilities, and the rest of the mass goes to
//!   the loss's "rest" bucket, as with a shared vocabulary;
//! - any other span (one teacher token over several student tokens, several over one, or
//!   several over several, as when a multi-byte character is split differently) has top-k
//!   alternatives over other boundaries, so the token-level losses give it **hard labels
//!   only**; the span likelihood loss (`--loss alm`) still compares the teacher's and the
//!   student's probabilities of the whole span, the product over its tokens on each side.
//!
//! [`align`] works on byte lengths only, so it serves any pair of tokenizers.

use std::ops::Range;

/// One span of the response that both tokenizations cover with whole tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The teacher's tokens in the span.
    pub teacher: Range<usize>,
    /// The student's tokens in the span.
    pub student: Range<usize>,
    /// The span's bytes in the response.
    pub bytes: Range<usize>,
}

impl Span {
    /// One teacher token and one student token over the same bytes.
    pub fn is_one_to_one(&self) -> bool {
        self.teacher.len() == 1 && self.student.len() == 1
    }
}

/// The spans of a response, in order, covering every token of both sides once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alignment {
    /// The spans, front to back.
    pub spans: Vec<Span>,
}

impl Alignment {
    /// For each student token, the teacher token spelling exactly its bytes, or `None` where
    /// the two tokenizations cut the span differently (hard labels only there).
    pub fn teacher_of_student(&self) -> Vec<Option<usize>> {
        let mut out = Vec::new();
        for span in &self.spans {
            let one = span.is_one_to_one().then_some(span.teacher.start);
            out.extend(span.student.clone().map(|_| one));
        }
        out
    }

    /// Student tokens in one-to-one spans, and student tokens in all.
    pub fn one_to_one_share(&self) -> (usize, usize) {
        let student: usize = self.spans.iter().map(|s| s.student.len()).sum();
        let one: usize = self.spans.iter().filter(|s| s.is_one_to_one()).count();
        (one, student)
    }
}

/// Why two tokenizations cannot be aligned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlignError {
    /// The two sides spell different numbers of bytes: they are not the same text.
    #[error("the teacher's tokens spell {teacher} bytes and the student's {student}: not the same text")]
    LengthMismatch {
        /// Bytes the teacher's tokens spell.
        teacher: usize,
        /// Bytes the student's tokens spell.
        student: usize,
    },
    /// A token spells no bytes, so no span can hold it unambiguously.
    #[error("the {side}'s token {index} spells no bytes")]
    EmptyToken {
        /// `teacher` or `student`.
        side: &'static str,
        /// The token's position.
        index: usize,
    },
}

/// Aligns two tokenizations of one text, given each token's length in bytes: cuts wherever
/// both sides have a token boundary.
///
/// # Errors
/// If the lengths do not add up to the same total, or a token is empty.
pub fn align(teacher: &[usize], student: &[usize]) -> Result<Alignment, AlignError> {
    for (side, lens) in [("teacher", teacher), ("student", student)] {
        if let Some(index) = lens.iter().position(|&l| l == 0) {
            return Err(AlignError::EmptyToken { side, index });
        }
    }
    let (teacher_total, student_total) = (teacher.iter().sum(), student.iter().sum());
    if teacher_total != student_total {
        return Err(AlignError::LengthMismatch {
            teacher: teacher_total,
            student: student_total,
        });
    }
    let mut spans = Vec::new();
    let (mut t, mut s) = (0, 0);
    // Where each side's next token ends, and where the current span began.
    let (mut t_end, mut s_end) = (0, 0);
    let (mut t_start, mut s_start, mut byte_start) = (0, 0, 0);
    while t < teacher.len() || s < student.len() {
        // Advance the side that is behind; both advance where they are level.
        if t_end <= s_end && t < teacher.len() {
            t_end += teacher[t];
            t += 1;
        }
        if s_end < t_end && s < student.len() {
            s_end += student[s];
            s += 1;
        }
        if t_end == s_end {
            spans.push(Span {
                teacher: t_start..t,
                student: s_start..s,
                bytes: byte_start..t_end,
            });
            (t_start, s_start, byte_start) = (t, s, t_end);
        }
    }
    Ok(Alignment { spans })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens(tokens: &[&str]) -> Vec<usize> {
        tokens.iter().map(|t| t.len()).collect()
    }

    fn spans(alignment: &Alignment) -> Vec<(Range<usize>, Range<usize>)> {
        alignment
            .spans
            .iter()
            .map(|s| (s.teacher.clone(), s.student.clone()))
            .collect()
    }

    #[test]
    fn identical_tokenizations_are_one_to_one() {
        let tokens = lens(&["The", " cat", " sat", "."]);
        let a = align(&tokens, &tokens).unwrap();
        assert_eq!(a.spans.len(), 4);
        assert!(a.spans.iter().all(Span::is_one_to_one));
        assert_eq!(a.teacher_of_student(), vec![Some(0), Some(1), Some(2), Some(3)]);
        assert_eq!(a.one_to_one_share(), (4, 4));
        assert_eq!(a.spans[2].bytes, 7..11);
    }

    #[test]
    fn one_teacher_token_over_several_student_tokens() {
        // Teacher: "The", " unbelievable", "!"; student splits the long word in three.
        let teacher = lens(&["The", " unbelievable", "!"]);
        let student = lens(&["The", " un", "believ", "able", "!"]);
        let a = align(&teacher, &student).unwrap();
        assert_eq!(spans(&a), vec![(0..1, 0..1), (1..2, 1..4), (2..3, 4..5)]);
        assert_eq!(a.teacher_of_student(), vec![Some(0), None, None, None, Some(2)]);
        assert_eq!(a.one_to_one_share(), (2, 5));
    }

    #[test]
    fn several_teacher_tokens_over_one_student_token() {
        let teacher = lens(&["Hello", ",", " wor", "ld"]);
        let student = lens(&["Hello", ",", " world"]);
        let a = align(&teacher, &student).unwrap();
        assert_eq!(spans(&a), vec![(0..1, 0..1), (1..2, 1..2), (2..4, 2..3)]);
        assert_eq!(a.teacher_of_student(), vec![Some(0), Some(1), None]);
    }

    #[test]
    fn crossing_boundaries_make_one_span_of_several_on_each_side() {
        // "abcdef": teacher ab|cd|ef, student abc|def: the only common cuts are the ends.
        let a = align(&[2, 2, 2], &[3, 3]).unwrap();
        assert_eq!(spans(&a), vec![(0..3, 0..2)]);
        assert_eq!(a.teacher_of_student(), vec![None, None]);
    }

    #[test]
    fn a_multi_byte_character_split_across_tokens() {
        // "café!" in UTF-8 is 63 61 66 c3 a9 21. The teacher splits é's two bytes into two
        // byte tokens (as byte-level vocabularies can); the student has é whole in "fé".
        let text = "café!";
        assert_eq!(text.len(), 6);
        let teacher = [3, 1, 1, 1]; // "caf", 0xc3, 0xa9, "!"
        let student = [2, 3, 1]; // "ca", "fé", "!"
        let a = align(&teacher, &student).unwrap();
        assert_eq!(spans(&a), vec![(0..3, 0..2), (3..4, 2..3)]);
        assert_eq!(a.spans[0].bytes, 0..5);
        assert_eq!(&text.as_bytes()[a.spans[0].bytes.clone()], "café".as_bytes());
        assert_eq!(a.teacher_of_student(), vec![None, None, Some(3)]);
    }

    #[test]
    fn texts_of_different_lengths_and_empty_tokens_are_refused() {
        assert_eq!(
            align(&[3, 2], &[3, 3]),
            Err(AlignError::LengthMismatch {
                teacher: 5,
                student: 6
            })
        );
        assert_eq!(
            align(&[3, 0, 2], &[5]),
            Err(AlignError::EmptyToken {
                side: "teacher",
                index: 1
            })
        );
        assert_eq!(align(&[], &[]).unwrap().spans, vec![]);
    }

    /// Every token of both sides lands in exactly one span, spans tile the bytes, and a span is
    /// never cut where only one side has a boundary, on many random pairs of partitions.
    #[test]
    fn spans_tile_both_tokenizations_on_random_partitions() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((state >> 33) % n) as usize
        };
        for _ in 0..500 {
            let total = 1 + next(60);
            let mut partition = |total: usize| {
                let mut lens = Vec::new();
                let mut left = total;
                while left > 0 {
                    let len = 1 + next(left.min(6) as u64);
                    lens.push(len);
                    left -= len;
                }
                lens
            };
            let (teacher, student) = (partition(total), partition(total));
            let a = align(&teacher, &student).unwrap();
            let ends = |lens: &[usize]| -> Vec<usize> {
                lens.iter()
                    .scan(0, |end, l| {
                        *end += l;
                        Some(*end)
                    })
                    .collect()
            };
            let (t_ends, s_ends) = (ends(&teacher), ends(&student));
            let mut at = (0, 0, 0);
            for span in &a.spans {
                assert_eq!((span.teacher.start, span.student.start, span.bytes.start), at);
                assert!(!span.teacher.is_empty() && !span.student.is_empty());
                assert_eq!(t_ends[span.teacher.end - 1], span.bytes.end);
                assert_eq!(s_ends[span.student.end - 1], span.bytes.end);
                // Inside a span the two sides share no boundary.
                for &end in &t_ends[span.teacher.start..span.teacher.end - 1] {
                    assert!(
                        !s_ends.contains(&end),
                        "{teacher:?} {student:?}: cut missed at {end}"
                    );
                }
                at = (span.teacher.end, span.student.end, span.bytes.end);
            }
            assert_eq!(at, (teacher.len(), student.len(), total));
        }
    }
}
