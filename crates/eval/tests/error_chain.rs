//! Errors chain their causes instead of repeating them: joined with ": ", as the CLI prints
//! them, each cause appears exactly once.

use distill_eval::texts::read_segments;

#[test]
fn a_file_that_is_not_utf8_names_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hyp.txt");
    std::fs::write(&path, b"fine\nbad \xff byte\n").unwrap();
    let err = read_segments(&path).unwrap_err();
    let mut causes = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    assert_eq!(causes.len(), 2, "{causes:?}");
    let line = causes.join(": ");
    assert!(
        line.starts_with(&format!("{}:2: not valid UTF-8: ", path.display())),
        "{line}"
    );
    for cause in &causes {
        assert_eq!(line.matches(cause.as_str()).count(), 1, "{cause:?} in {line:?}");
    }
}
