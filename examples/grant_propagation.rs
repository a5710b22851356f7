//! How long a grant made through one replica takes to hold on another: two gateways in this
//! process share the PostgreSQL at `--url`; 100 grants go through replica A's admin API and
//! replica B's API is polled (every millisecond) until it shows each one.
//!
//! `bench/replicas.sh` starts a throwaway PostgreSQL and runs this; the figures go in
//! docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

const TOKEN: &str = "propagation-bench-admin-token";

async fn replica(url: &str, name: &str, dir: &std::path::Path) -> aigate::AppHandle {
    let text = aigate::config::DEFAULT_CONFIG
        .replace("listen = \"127.0.0.1:3128\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:9180\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "state_dir = \"./aigate-data\"",
            &format!("state_dir = {:?}", dir.join(name)),
        )
        .replace(
            "backend = \"file\"",
            &format!("backend = \"postgres\"\nurl = \"{url}\"\nreplica_id = \"{name}\""),
        )
        .replace("level = \"info\"", "level = \"warn\"")
        .replace(
            "# users_file = \"users.toml\"",
            "users_file = \"users.toml\"",
        )
        + &format!(
            "\n[[admin.tokens]]\nuser = \"root\"\nroles = [\"admin\"]\nhash = \"{}\"\n",
            aigate::identify::user::hash_token(TOKEN)
        );
    std::fs::write(dir.join("users.toml"), "[[users]]\nid = \"alice\"\n").unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let cfg = aigate::config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
    aigate::App::start(cfg).await.unwrap()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = match args.iter().position(|a| a == "--url") {
        Some(i) => args[i + 1].clone(),
        None => {
            eprintln!("usage: grant_propagation --url postgres://user@host:port/db [--grants N]");
            std::process::exit(64);
        }
    };
    let n: usize = args
        .iter()
        .position(|a| a == "--grants")
        .map_or(100, |i| args[i + 1].parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let a = replica(&url, "a", dir.path()).await;
    let b = replica(&url, "b", dir.path()).await;
    for gw in [&a, &b] {
        while gw.storage_up() != Some(true) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let resp = http
            .post(format!("http://{}/v1/exemptions", a.admin_addr))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"user": "alice", "tools": ["claude-code"], "for": "1h", "reason": format!("propagation bench {i}")}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let granted = Instant::now();
        let ex: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(status, 201, "{ex}");
        let id = ex["id"].as_str().unwrap();
        loop {
            let seen = http
                .get(format!("http://{}/v1/exemptions/{id}", b.admin_addr))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .status();
            if seen == 200 {
                break;
            }
            assert!(
                granted.elapsed() < Duration::from_secs(10),
                "grant {id} never reached B"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        times.push(granted.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "grants: {n}  propagation A -> B: median {:.2} ms, p90 {:.2} ms, max {:.2} ms (min {:.2} ms)",
        ms(times[n / 2]),
        ms(times[n * 9 / 10]),
        ms(times[n - 1]),
        ms(times[0])
    );
}
