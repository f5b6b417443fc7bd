//! The README is the partner's reference for error reasons: every reason a server can send is
//! listed there.

#[test]
fn the_readme_lists_every_error_reason() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let missing: Vec<&str> = medins_common::Reason::ALL
        .iter()
        .map(|reason| reason.as_str())
        .filter(|reason| !readme.contains(&format!("| {reason} |")))
        .collect();
    assert!(missing.is_empty(), "README's reason table lacks: {missing:?}");
}
