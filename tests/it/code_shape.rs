//! The shape of the code, checked as the README's Layout section promises: no two modules of
//! `src/` import each other, and no function is longer than 80 lines.

use std::process::Command;

fn script(name: &str) -> std::process::Output {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/");
    Command::new("python3").arg(format!("{path}{name}")).output().expect("python3")
}

#[test]
fn no_module_imports_another_that_imports_it() {
    let o = script("module-cycles.py");
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let o = script("long-functions.py");
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}
