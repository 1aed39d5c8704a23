//! `patchops controller`: the Kubernetes operator — reconcile the custom resources of one
//! or more namespaces (each a site with its own store) into the store and their status
//! subresources; or print the Roles it needs, or remove its finalizers and exit.

use std::process::ExitCode;

use crate::Result;
use crate::kubernetes::ControllerOptions;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Store holding the catalog, compliance and policies (the management point's): a
    /// postgres:// URL (or a SQLite path for a single pod). With several namespaces each
    /// is a site with its own store: write `{namespace}` where the namespace goes, e.g.
    /// postgres://patchops@db/patchops_{namespace}.
    #[arg(long, env = "PATCHOPS_STORE", required_unless_present_any = ["print_rbac", "remove_finalizers"])]
    pub store: Option<String>,
    /// Namespace whose resources this controller manages, each a site. Repeat the flag
    /// (or separate by commas in PATCHOPS_NAMESPACE) to manage several.
    #[arg(long = "namespace", env = "PATCHOPS_NAMESPACE", value_delimiter = ',', default_value = "default")]
    pub namespaces: Vec<String>,
    /// Namespace of the Lease that keeps one replica active. Default: the first
    /// --namespace (the chart sets the release namespace).
    #[arg(long, env = "PATCHOPS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "PATCHOPS_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: std::net::SocketAddr,
    /// Lease that keeps one replica active.
    #[arg(long, default_value = "patchops-controller")]
    pub lease_name: String,
    /// How often new compliance and catalog versions in the store are looked for.
    #[arg(long, default_value = "30s")]
    pub resync: crate::time::Duration,
    /// Print the Roles the controller needs in each namespace (every API call it makes)
    /// and exit; with --remove-finalizers, the Roles that needs.
    #[arg(long)]
    pub print_rbac: bool,
    /// Remove the patchops finalizer from every UpdateDeployment in the namespaces and
    /// exit: the way out once the controller is gone for good, so namespace deletion is
    /// not blocked. Their client policies are not withdrawn (the store keeps them).
    #[arg(long)]
    pub remove_finalizers: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    crate::kubernetes::run(ControllerOptions {
        store: args.store,
        namespaces: args.namespaces,
        lease_namespace: args.lease_namespace,
        metrics_listen: args.metrics_listen,
        lease_name: args.lease_name,
        resync: args.resync,
        print_rbac: args.print_rbac,
        remove_finalizers: args.remove_finalizers,
    })
}
