//! Re-embeds the migrations when they change (`embed_migrations!` alone does not notice).

fn main() {
    println!("cargo:rerun-if-changed=../migrations/insurance");
}
