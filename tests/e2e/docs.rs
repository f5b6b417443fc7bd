//! Documents and files the team relies on: the README lists every error reason a server can send,
//! and migration folders keep the versions diesel orders them by.

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

/// diesel orders and records migrations by the part of the folder name before the first `_`:
/// two folders with one version would let the second be skipped silently as "already run"
/// (it happened once, when two branches merged the same day).
#[test]
fn every_migration_has_a_version_of_its_own_and_both_backends_have_the_same_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for service in ["identity", "insurance"] {
        let versions = |backend: &str| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(root.join(service).join(backend))
                .expect("migrations folder")
                .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let sqlite = versions("sqlite");
        let mut seen = std::collections::BTreeSet::new();
        for name in &sqlite {
            let version = name.split('_').next().expect("a version");
            assert!(seen.insert(version.to_owned()), "{service}: version {version} is used twice ({name})");
        }
        assert_eq!(sqlite, versions("postgres"), "{service}: SQLite and PostgreSQL migrations differ");
    }
}
