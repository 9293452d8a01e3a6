//! The web dashboard in real browsers: Debian's Chromium, headless, driven by Selenium
//! (`tests/python/dashboard.py`), then Firefox ESR over Marionette
//! (`tests/python/dashboard_firefox.py`): signing in with `wasmorch dashboard`'s link, live views
//! following kubectl's changes, scaling from the page, a pod's logs, a refused action for a
//! viewer, a namespace picked by one who may read only that namespace, usage charts, a
//! phone-sized dark page. Screenshots land in `target/ui-screenshots/`.

mod common;

use common::{Cluster, apply, kubectl_available};
use std::process::Command;

/// The first of `names` found on PATH.
fn which(names: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| std::env::split_paths(&path).map(|d| d.join(n)).find(|p| p.is_file()))
}

/// Chromium (Debian's; or Chrome where that is what the machine has) and its driver, when
/// Selenium is there too.
fn browser() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let found = which(&["chromium", "chromium-browser", "google-chrome"]).zip(which(&["chromedriver"]));
    let selenium = Command::new("python3").args(["-c", "import selenium"]).output().is_ok_and(|o| o.status.success());
    if found.is_none() || !selenium {
        assert!(
            std::env::var_os("WASMORCH_REQUIRE_PEERS").is_none(),
            "Chromium, chromedriver and Selenium are required (apt-get install chromium chromium-driver; pip install selenium)"
        );
        eprintln!("SKIPPED: no Chromium/chromedriver/Selenium");
        return None;
    }
    found
}

/// Firefox ESR and the Marionette client.
fn firefox_available() -> bool {
    let have = which(&["firefox-esr"]).is_some()
        && Command::new("python3").args(["-c", "import marionette_driver"]).output().is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("WASMORCH_REQUIRE_PEERS").is_none(),
            "Firefox ESR and marionette_driver are required (apt-get install firefox-esr; pip install marionette_driver)"
        );
        eprintln!("SKIPPED: no Firefox ESR/marionette_driver");
    }
    have
}

/// `viewer` views everything; `team` views only the default namespace.
const VIEWER: &str = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: viewer}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: viewer-view}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects: [{kind: ServiceAccount, name: viewer, namespace: default}]\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: team}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: team-view}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects: [{kind: ServiceAccount, name: team, namespace: default}]\n";

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n        - name: main\n          image: wasmorch.local/hello-http:1.0\n";

#[test]
fn the_dashboard_shows_and_steers_the_cluster_in_chromium() {
    if !kubectl_available() {
        return;
    }
    let Some((chrome, driver)) = browser() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Usage measured every second, so the charts have points within the test.
    let c = Cluster::start_with(d, &["--node-address", &common::node_address(), "--metric-resolution", "1s"]);
    let link = c.ok(&["dashboard", "--no-open", "--duration", "30m"]).trim().to_string();
    assert!(link.starts_with(&format!("{}/ui/#token=", c.url)), "{link}");
    apply(&c, d, "viewer", VIEWER);
    let kubectl = |args: &[&str]| c.kubectl_ok(args).trim().to_string();
    let view_token = kubectl(&["create", "token", "viewer", "--duration", "30m"]);
    let team_token = kubectl(&["create", "token", "team", "--duration", "30m"]);
    let manifest = d.join("web.yaml");
    std::fs::write(&manifest, WEB).unwrap();
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/dashboard.py");
    let out = Command::new("python3")
        .arg(script)
        .env("DASHBOARD_URL", format!("{}/ui/", c.url))
        .env("CHROME_BIN", &chrome)
        .env("CHROMEDRIVER", &driver)
        .env("ADMIN_LINK", &link)
        .env("VIEW_TOKEN", &view_token)
        .env("TEAM_TOKEN", &team_token)
        .env("KUBECONFIG", c.kubeconfig())
        .env("HOME", d.join("home"))
        .env("MANIFEST", &manifest)
        .env("SHOTS", &shots)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(out.status.success(), "the browser test failed:\n{err}\n{}", c.log());
    // What the page did reached the API: the Deployment was scaled to 3 from the page.
    assert_eq!(kubectl(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]), "3");

    // Firefox too (Debian's ESR over Marionette): signed in, live, scaling, logs.
    if firefox_available() {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/dashboard_firefox.py");
        let out = Command::new("python3")
            .arg(script)
            .env("DASHBOARD_URL", format!("{}/ui/", c.url))
            .env("ADMIN_LINK", &link)
            .env("KUBECONFIG", c.kubeconfig())
            .env("HOME", d.join("home"))
            .env("SHOTS", &shots)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{err}");
        assert!(out.status.success(), "the Firefox test failed:\n{err}");
        assert_eq!(kubectl(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]), "4");
    }
    for name in ["overview", "workloads", "pods", "logs", "events", "services", "refused", "phone-dark"] {
        let f = shots.join(format!("{name}.png"));
        assert!(std::fs::metadata(&f).is_ok_and(|m| m.len() > 5000), "{} is missing or empty", f.display());
    }
}
