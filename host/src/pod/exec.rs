//! What `kubectl exec` and `attach` reach in a container of this node's pods (served by
//! [`crate::streams`]).

use super::{NodeCtx, PodInfo};
use crate::runtime::Loaded;
use crate::runtime::NetPolicy;
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What exec runs in a container: its own command component, else the debug component the
/// pod names in [`DEBUG_IMAGE_ANNOTATION`] (pulled on the first exec), else nothing, and why.
#[allow(clippy::too_many_arguments)]
pub(super) fn exec_target(
    ctx: &Arc<NodeCtx>,
    info: &PodInfo,
    name: &str,
    loaded: &Loaded,
    env: &[(String, String)],
    cgroup: &Arc<crate::runtime::cgroup::Cgroup>,
    net: &Arc<NetPolicy>,
    mounts: &Arc<[crate::runtime::Mount]>,
    cluster: &Option<Arc<dyn crate::runtime::Cluster>>,
    stop: &CancellationToken,
    attach: Arc<crate::streams::attach::Attach>,
) -> crate::streams::ExecTarget {
    use crate::streams::Command;
    let debug = info.pod.pointer(&format!("/metadata/annotations/{}", DEBUG_IMAGE_ANNOTATION.replace('/', "~1")));
    let command = match (loaded, debug.and_then(Value::as_str)) {
        (Loaded::Command(pre), _) => Command::Own(pre.clone()),
        (Loaded::Http(_), Some(image)) => {
            let (ctx, image) = (ctx.clone(), image.to_string());
            Command::Debug(Arc::new(move || {
                let (ctx, image) = (ctx.clone(), image.clone());
                Box::pin(async move {
                    let fetched =
                        ctx.puller.fetch_component(&image, "IfNotPresent", &[]).await.map_err(|e| e.message)?;
                    let rt = ctx.rt.clone();
                    let (_, loaded) = tokio::task::spawn_blocking(move || rt.load_fetched(&fetched))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("debug image {image}: {e:#}"))?;
                    match loaded {
                        Loaded::Command(pre) => Ok(pre),
                        Loaded::Http(_) => Err(format!("debug image {image} is an HTTP component, not a command")),
                    }
                })
            }))
        }
        (Loaded::Http(_), None) => Command::Unavailable(format!(
            "its component serves HTTP (wasi:http) and has no command to run; name a command component              for exec in the pod annotation {DEBUG_IMAGE_ANNOTATION}"
        )),
    };
    crate::streams::ExecTarget {
        name: name.to_string(),
        command,
        rt: ctx.rt.clone(),
        env: env.to_vec(),
        cgroup: cgroup.clone(),
        net: net.clone(),
        mounts: mounts.clone(),
        cluster: cluster.clone(),
        stop: stop.clone(),
        attach,
        log: crate::logs::log_path(&info.log_dir, name, false),
    }
}

/// The pod annotation naming a command component that `kubectl exec` runs in containers
/// whose own component serves HTTP.
pub const DEBUG_IMAGE_ANNOTATION: &str = "wasmorch.io/debug-image";
