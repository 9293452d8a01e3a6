//! CustomResourceDefinitions as this API server serves them: an informer of the stored
//! definitions loads them into `wasmorch_api::custom`'s registry whenever one changes, so
//! routing, discovery and validation follow within the watch's latency.

use super::api::Api;
use crate::controllers::runtime::Informer;
use std::sync::Arc;
use wasmorch_api::resources::{self, ResourceKind};

pub fn start(api: &Api) {
    let informer = Informer::new(resources::of(ResourceKind::CustomResourceDefinition));
    let source: u64 = rand::random();
    let weak = Arc::downgrade(&informer);
    informer.on_change(Arc::new(move |_, _| {
        if let Some(i) = weak.upgrade() {
            wasmorch_api::custom::load(source, &i.cache.list(None));
        }
    }));
    tokio::spawn(informer.run(api.clone()));
}
