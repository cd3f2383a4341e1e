//! The policy's documentation is generated from its schema: the reference
//! table in docs/policy.md and docs/meshpolicy.schema.json are what
//! `meridianctl schema` prints (`MERIDIAN_UPDATE_GOLDEN=1` rewrites them).

use meridian_mesh_config::policy::schema;
use std::path::PathBuf;

const BEGIN: &str = "<!-- BEGIN GENERATED: meridianctl schema --markdown -->\n";
const END: &str = "<!-- END GENERATED -->";

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

#[test]
fn the_reference_and_the_schema_file_are_current() {
    let update = std::env::var_os("MERIDIAN_UPDATE_GOLDEN").is_some();
    let page = std::fs::read_to_string(docs().join("policy.md")).expect("docs/policy.md");
    let (head, rest) = page.split_once(BEGIN).expect("the BEGIN marker");
    let (_, tail) = rest.split_once(END).expect("the END marker");
    let current = format!("{head}{BEGIN}{}{END}{tail}", schema::reference_markdown());
    let json = format!("{}\n", serde_json::to_string_pretty(&schema::json_schema()).expect("JSON"));
    let schema_file = docs().join("meshpolicy.schema.json");
    if update {
        std::fs::write(docs().join("policy.md"), &current).expect("write");
        std::fs::write(&schema_file, &json).expect("write");
        return;
    }
    assert!(
        page == current,
        "docs/policy.md's reference is stale (MERIDIAN_UPDATE_GOLDEN=1 cargo test -p meridian-mesh-config --test docs)"
    );
    assert!(
        std::fs::read_to_string(&schema_file).ok().as_deref() == Some(json.as_str()),
        "docs/meshpolicy.schema.json is stale (MERIDIAN_UPDATE_GOLDEN=1 cargo test -p meridian-mesh-config --test docs)"
    );
    // Every field of the types is documented.
    let rows = schema::reference_rows();
    let undocumented: Vec<&String> = rows.iter().filter(|r| r.3.trim().is_empty()).map(|r| &r.0).collect();
    assert!(undocumented.is_empty(), "fields without a description: {undocumented:?}");
    for field in [
        "models.<name>.canary.weight",
        "regions[].zone",
        "callers.<name>.residency",
        "resilience.retry.maxAttempts",
        "failStrategy",
    ] {
        assert!(rows.iter().any(|r| r.0 == field), "{field} is in the reference");
    }
}
