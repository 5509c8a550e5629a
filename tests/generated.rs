//! Generated files must match what the code generates: a drift fails here, with the
//! command that fixes it.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn assert_same(committed: &str, generated: &str, fix: &str) {
    let path = root().join(committed);
    // `ROUTEMETER_UPDATE_GENERATED=1 cargo test --test generated` rewrites the files.
    if std::env::var_os("ROUTEMETER_UPDATE_GENERATED").is_some() {
        std::fs::write(&path, generated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; run `{fix}`", path.display()));
    assert!(
        on_disk == generated,
        "{committed} is out of date with the code: run `{fix}`"
    );
}

#[test]
fn crd_matches_the_rust_types() {
    let generated = routemeter::crd::crd_yaml().expect("CRD serialises");
    assert_same(
        "crds/routemeter.io_monitoredservices.yaml",
        &generated,
        "make generate",
    );
}

#[test]
fn chart_crds_match_the_top_level_crds() {
    let top = std::fs::read_to_string(root().join("crds/routemeter.io_monitoredservices.yaml"))
        .expect("crds/");
    assert_same(
        "charts/routemeter/crds/routemeter.io_monitoredservices.yaml",
        &top,
        "make generate",
    );
}

#[test]
fn chart_dashboard_matches_the_code() {
    let generated = serde_json::to_string_pretty(&routemeter::monitoring::dashboard::overview())
        .expect("json")
        + "\n";
    assert_same(
        "charts/routemeter/dashboards/overview.json",
        &generated,
        "make generate",
    );
}

#[test]
fn every_example_renders() {
    let dir = root().join("manifests/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples folder") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let args = routemeter::operator::render::Args {
            file: path.clone(),
            targets: None,
            proxy_image: "routemeter/routemeter:test".into(),
            cluster_domain: "cluster.local".into(),
            rules_only: false,
        };
        let out = args
            .render()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for kind in [
            "ConfigMap",
            "Deployment",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
        ] {
            assert!(
                out.contains(&format!("kind: {kind}\n")),
                "{} renders no {kind}",
                path.display()
            );
        }
        seen += 1;
    }
    assert!(seen >= 2, "expected the examples in {}", dir.display());
}
