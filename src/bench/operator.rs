//! `patchops bench operator`: one resync wave of the controller over 1,000 custom
//! resources (10 collections, 10 update lists, 980 deployments) and the bench fleet
//! (`--clients` × 200 states) in SQLite, behind a mock API server on loopback that
//! answers every status patch and event. Prints the wave's time, how often the fleet was
//! loaded and the site derived, and the API calls made; then a second, quiet wave; then,
//! in the same run, the reference the waves are measured against: one plain fleet load
//! from the same store and one bare status patch per object on the same mock API server.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;

use super::{BenchArgs, synthetic, write_store};
use crate::kubernetes::FINALIZER;
use crate::kubernetes::context::{Applied, Caches, Context, Pipeline};
use crate::kubernetes::reconciler::reconcile;
use crate::{Error, Result};

const NS: &str = "bench";

fn filled<K: kube::Resource<DynamicType = ()> + Clone>(objects: Vec<K>) -> reflector::Store<K> {
    let mut w = Writer::<K>::default();
    let reader = w.as_reader();
    w.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        w.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    w.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

/// As the API server hands them out: namespaced, with a uid, generation and version.
fn served<K: kube::Resource>(mut o: K, finalizer: bool) -> K {
    let m = o.meta_mut();
    m.namespace = Some(NS.into());
    m.uid = Some(format!("uid-{}", m.name.as_deref().unwrap_or_default()));
    m.generation = Some(1);
    m.resource_version = Some("1".into());
    if finalizer {
        m.finalizers = Some(vec![FINALIZER.into()]);
    }
    o
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let now = Timestamp::now();
    let mut args = args.clone();
    args.deployments = 980;
    let (desired, catalog, fleet) = synthetic(&args, now);
    let objects = desired.collections.len() + desired.update_lists.len() + desired.deployments.len();
    println!(
        "patchops bench operator: {objects} custom resources, {} clients, {} states, mock API server on loopback",
        fleet.clients.len(),
        fleet.state_count()
    );
    let dir = std::env::temp_dir().join(format!("patchops-bench-operator-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    let db = dir.join("site.db");
    let t = Instant::now();
    write_store(&db, &catalog, &fleet, now)?;
    println!("  setup: wrote the SQLite store in {:.1} s", t.elapsed().as_secs_f64());
    drop(fleet);
    let result = waves(&db, &desired, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(ExitCode::SUCCESS)
}

/// One server-side apply of each object's published status, as the reconciler sends it,
/// with nothing decided or derived around it.
async fn bare_patches<K>(client: &kube::Client, objects: &[K], applied: &Applied) -> Result<usize>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: kube::Api<K> = kube::Api::namespaced(client.clone(), NS);
    let params = kube::api::PatchParams::apply("patchops-bench").force();
    for o in objects {
        let name = o.name_any();
        let status = applied.status_of(&K::kind(&()), &name).cloned().unwrap_or_default();
        let body = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
        api.patch_status(&name, &params, &kube::api::Patch::Apply(&body))
            .await
            .map_err(|e| Error::Runtime(format!("bare status patch of {name}: {e}")))?;
    }
    Ok(objects.len())
}

fn waves(db: &std::path::Path, desired: &crate::desired::DesiredState, dir: &std::path::Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the runtime: {e}")))?;
    let collections: Vec<_> = desired.collections.values().cloned().map(|o| served(o, false)).collect();
    let lists: Vec<_> = desired.update_lists.values().cloned().map(|o| served(o, false)).collect();
    let deployments: Vec<_> = desired.deployments.values().cloned().map(|o| served(o, true)).collect();
    // What the API server holds, by `<plural>/<name>`: a status patch answers the object.
    let mut held: HashMap<String, serde_json::Value> = HashMap::new();
    for o in &collections {
        held.insert(format!("collections/{}", o.name_any()), serde_json::to_value(o).expect("serializes"));
    }
    for o in &lists {
        held.insert(format!("updatelists/{}", o.name_any()), serde_json::to_value(o).expect("serializes"));
    }
    for o in &deployments {
        held.insert(format!("updatedeployments/{}", o.name_any()), serde_json::to_value(o).expect("serializes"));
    }
    let held = Arc::new(held);
    // The mock API server: every status patch 200, every event 201, counted.
    let calls = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)]);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| Error::Usage(format!("cannot bind 127.0.0.1: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Error::Runtime(format!("no address: {e}")))?;
    let counted = calls.clone();
    let api = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (calls, held) = (counted.clone(), held.clone());
        async move {
            let path = request.uri().path().to_string();
            let (code, slot) = match (request.method().as_str(), path.ends_with("/status")) {
                ("PATCH", true) => (axum::http::StatusCode::OK, 0),
                ("POST", _) | ("PATCH", false) => (axum::http::StatusCode::CREATED, 1),
                _ => (axum::http::StatusCode::NOT_FOUND, 2),
            };
            calls[slot].fetch_add(1, Ordering::Relaxed);
            // The patched object as the API server answers it: the request's body with
            // the object's name (`…/<plural>/<name>/status`).
            let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap_or_default();
            let mut object: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| serde_json::json!({}));
            if slot == 0 {
                let mut parts = path.rsplit('/').skip(1);
                let (name, plural) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                if let Some(o) = held.get(&format!("{plural}/{name}")) {
                    let status = object["status"].take();
                    object = o.clone();
                    object["status"] = status;
                }
            }
            (code, [(axum::http::header::CONTENT_TYPE, "application/json")], object.to_string())
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(async move {
        let _ = axum::serve(listener, api)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    let measured = rt.block_on(async {
        let config = kube::Config::new(format!("http://{addr}").parse().expect("a loopback URL"));
        let client = kube::Client::try_from(config).map_err(|e| Error::Runtime(format!("kube client: {e}")))?;
        let caches = Caches {
            catalogs: filled(vec![]),
            collections: filled(collections.clone()),
            client_settings: filled(vec![]),
            update_lists: filled(lists.clone()),
            templates: filled(vec![]),
            deployments: filled(deployments.clone()),
            packages: filled(vec![]),
            rules: filled(vec![]),
            waivers: filled(vec![]),
            compliance_policies: filled(vec![]),
            notification_providers: filled(vec![]),
            alerts: filled(vec![]),
        };
        let store = tokio::task::spawn_blocking({
            let url = db.display().to_string();
            move || crate::store::open(&url)
        })
        .await
        .map_err(|e| Error::Runtime(e.to_string()))??;
        let pipeline = Pipeline::new(store, &dir.join("cache"));
        let ctx = Arc::new(Context::new(client, NS, caches, pipeline, Default::default()));
        let mut took = Vec::new();
        for label in ["first wave (cold start)", "second wave (nothing changed)"] {
            let before: Vec<usize> = calls.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            let t = Instant::now();
            // As a resync wave queues them: every object of every kind, one after the other.
            for o in &collections {
                reconcile(Arc::new(o.clone()), ctx.clone()).await.map_err(|e| Error::Runtime(e.to_string()))?;
            }
            for o in &lists {
                reconcile(Arc::new(o.clone()), ctx.clone()).await.map_err(|e| Error::Runtime(e.to_string()))?;
            }
            for o in &deployments {
                reconcile(Arc::new(o.clone()), ctx.clone()).await.map_err(|e| Error::Runtime(e.to_string()))?;
            }
            took.push(t.elapsed().as_secs_f64());
            let (loads, stats) = {
                let p = ctx.pipeline.lock().unwrap_or_else(|e| e.into_inner());
                (p.fleet_loads, p.site().map(|s| s.stats).unwrap_or_default())
            };
            let made: Vec<usize> = calls.iter().zip(&before).map(|(c, b)| c.load(Ordering::Relaxed) - b).collect();
            println!(
                "  {label}: {} reconciles in {:.2} s; fleet loaded {loads}× in all, {} whole derivations, \
                 {} publishes; API calls: {} status patches, {} events",
                collections.len() + lists.len() + deployments.len(),
                took[took.len() - 1],
                stats.derivations,
                stats.publishes,
                made[0],
                made[1]
            );
        }
        // The reference: what a wave cannot do without, done plainly in the same run.
        let t = Instant::now();
        let fleet = tokio::task::spawn_blocking({
            let url = db.display().to_string();
            move || crate::store::open(&url)?.load_fleet()
        })
        .await
        .map_err(|e| Error::Runtime(e.to_string()))??;
        let load = t.elapsed().as_secs_f64();
        drop(fleet);
        let applied = ctx.apply(ctx.desired()).await.map_err(|e| Error::Runtime(e.to_string()))?;
        let t = Instant::now();
        let mut patches = bare_patches(&ctx.client, &collections, &applied).await?;
        patches += bare_patches(&ctx.client, &lists, &applied).await?;
        patches += bare_patches(&ctx.client, &deployments, &applied).await?;
        let patching = t.elapsed().as_secs_f64();
        println!(
            "  reference, same run: one plain fleet load {load:.2} s + {patches} bare status patches {patching:.2} s \
             = {:.2} s; the cold wave took {:.2}× that, the quiet wave {:.2}× the bare patches",
            load + patching,
            took[0] / (load + patching),
            took[1] / patching
        );
        Ok::<_, Error>(())
    });
    let _ = stop.send(());
    let _ = rt.block_on(server);
    measured
}
