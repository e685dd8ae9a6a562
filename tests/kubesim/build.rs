//! The Kubescape content catalogue (src/catalogue.rs) is written in parallel; until it exists
//! the emulator is built without profile and scan output.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(has_catalogue)");
    println!("cargo::rerun-if-changed=src/catalogue.rs");
    println!("cargo::rerun-if-changed=src");
    if std::path::Path::new("src/catalogue.rs").exists() {
        println!("cargo::rustc-cfg=has_catalogue");
    }
}
