//! Reconcile loops run by the control plane. Each observes through the API's watch, decides
//! in a pure function, acts through [`Api`](crate::apiserver::api::Api), and requeues.

pub mod apiservice;
pub mod crd;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod eventttl;
pub mod gateway;
pub mod gc;
pub mod hpa;
pub mod idle;
pub mod ingress;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod quota;
pub mod rbac;
pub mod replicaset;
pub mod runtime;
pub mod serviceaccounts;

use crate::apiserver::api::Api;
use runtime::Informer;
use wasmorch_api::resources;

/// Start the scheduler and the workload controllers over shared informers.
pub fn start_all(
    api: &Api,
    scheduler: crate::scheduler::Config,
    lifecycle: nodelifecycle::Config,
    pod_ranges: wasmorch_api::ipam::PodRanges,
    autoscaling: (hpa::Config, std::sync::Arc<crate::apiserver::metrics::Metrics>, std::time::Duration),
) -> Vec<tokio::task::JoinHandle<()>> {
    use resources::ResourceKind as K;
    let informer = |kind: K| Informer::new(resources::of(kind));
    // Pods, the most numerous and busiest kind, are not copied twice: the API server already
    // follows them (its lookups), and this term's controllers follow that informer.
    let shared_pods = api.lookups.get().and_then(|l| l.informer(K::Pod)).map(|i| i.follower());
    let pods = shared_pods.clone().unwrap_or_else(|| informer(K::Pod));
    let nodes = informer(K::Node);
    let replicasets = informer(K::ReplicaSet);
    let rcs = informer(K::ReplicationController);
    let quotas = informer(K::ResourceQuota);
    let deployments = informer(K::Deployment);
    let jobs = informer(K::Job);
    let daemonsets = informer(K::DaemonSet);
    let cronjobs = informer(K::CronJob);
    let services = informer(K::Service);
    let leases = informer(K::Lease);
    let pdbs = informer(K::PodDisruptionBudget);
    let hpas = informer(K::HorizontalPodAutoscaler);
    let cluster_roles = informer(K::ClusterRole);
    let crds = informer(K::CustomResourceDefinition);
    let ingresses = informer(K::Ingress);
    let ingress_classes = informer(K::IngressClass);
    let mut tasks = vec![
        tokio::spawn(crate::scheduler::start(api.clone(), pods.clone(), nodes.clone(), scheduler)),
        tokio::spawn(replicaset::start(api.clone(), replicasets.clone(), pods.clone())),
        tokio::spawn(replicaset::start(api.clone(), rcs.clone(), pods.clone())),
        tokio::spawn(deployment::start(api.clone(), deployments.clone(), replicasets.clone(), pods.clone())),
        tokio::spawn(job::start(api.clone(), jobs.clone(), pods.clone())),
        tokio::spawn(cronjob::start(api.clone(), cronjobs.clone(), jobs.clone())),
        tokio::spawn(daemonset::start(api.clone(), daemonsets.clone(), nodes.clone(), pods.clone())),
        tokio::spawn(endpoints::start(api.clone(), services.clone(), pods.clone(), nodes.clone())),
        tokio::spawn(disruption::start(api.clone(), pdbs.clone(), pods.clone())),
        tokio::spawn(rbac::start(api.clone(), cluster_roles.clone())),
        tokio::spawn(crd::start(api.clone(), crds.clone())),
        tokio::spawn(idle::start(api.clone(), deployments.clone(), pods.clone(), autoscaling.1.clone(), autoscaling.2)),
        tokio::spawn(hpa::start(
            api.clone(),
            hpas.clone(),
            pods.clone(),
            services.clone(),
            autoscaling.1,
            autoscaling.0,
        )),
        tokio::spawn(quota::start(api.clone(), quotas.clone(), pods.clone())),
        tokio::spawn(ingress::start(api.clone(), ingresses.clone(), nodes.clone(), ingress_classes.clone())),
        tokio::spawn(gateway::start(api.clone(), services.clone(), nodes.clone())),
        tokio::spawn(nodelifecycle::start(api.clone(), nodes.clone(), pods.clone(), leases.clone(), lifecycle)),
        tokio::spawn(nodeipam::start(api.clone(), nodes.clone(), pod_ranges)),
        tokio::spawn(gc::start(
            api.clone(),
            vec![
                ("Deployment", deployments.clone()),
                ("ReplicaSet", replicasets.clone()),
                ("ReplicationController", rcs.clone()),
                ("Job", jobs.clone()),
                ("DaemonSet", daemonsets.clone()),
                ("CronJob", cronjobs.clone()),
            ],
            vec![("ReplicaSet", replicasets.clone()), ("Pod", pods.clone()), ("Job", jobs.clone())],
        )),
    ];
    // Informers start after every controller registered its handlers.
    match shared_pods {
        Some(p) => p.replay(),
        None => tasks.push(tokio::spawn(pods.run(api.clone()))),
    }
    for i in [
        nodes,
        replicasets,
        rcs,
        quotas,
        deployments,
        jobs,
        daemonsets,
        cronjobs,
        services,
        leases,
        pdbs,
        hpas,
        cluster_roles,
        crds,
        ingresses,
        ingress_classes,
    ] {
        tasks.push(tokio::spawn(i.run(api.clone())));
    }
    tasks
}
