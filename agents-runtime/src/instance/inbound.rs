//! [`Inbound`]: what the links between nodes bring, handed to the instances they are for.
//!
//! A gateway's frame goes to its instance here, started if needed (its turn then finds out
//! whether this node owns it); an owner's frame goes only to an instance that is live here
//! (the one relaying to it). The frames of one link reach their instances in order, and a full
//! mailbox holds the link's reading back, as a socket's does.

use std::sync::{Arc, Weak};

use crate::cluster::frames::Frame;
use crate::cluster::peers::Delivery;
use crate::cluster::{GatewayLink, Inbound};
use crate::instance::directory::Directory;
use crate::instance::event::{ClusterEvent, Event};
use crate::sync::lock;

/// The links' way into one server's instances.
pub(crate) struct Links {
    directory: Weak<Directory>,
}

impl Links {
    pub(crate) fn new(directory: &Arc<Directory>) -> Arc<Self> {
        Arc::new(Self { directory: Arc::downgrade(directory) })
    }
}

impl Inbound for Links {
    fn gateway_frame<'a>(&'a self, link: &'a Arc<GatewayLink>, frame: Frame) -> Delivery<'a> {
        Box::pin(async move {
            let Some(directory) = self.directory.upgrade() else { return };
            let (agent, name) = frame.instance();
            let (agent, name) = (agent.to_owned(), name.to_owned());
            let Some(class) = directory.classes.get(agent.as_str()).copied() else {
                link.answer(&Frame::NotOwner { agent, name });
                return;
            };
            if let Frame::Connect { .. } = frame {
                lock(&link.instances).insert((class.name, name.clone()));
            }
            let event = Event::Cluster(Box::new(ClusterEvent::FromGateway(link.clone(), frame)));
            if directory.dispatch(&class, &name, event).await.is_none() {
                link.answer(&Frame::NotOwner { agent, name });
            }
        })
    }

    fn owner_frame<'a>(&'a self, owner: &'a Arc<str>, frame: Frame) -> Delivery<'a> {
        Box::pin(async move {
            let Some(directory) = self.directory.upgrade() else { return };
            let (agent, name) = frame.instance();
            let Some(class) = directory.classes.get(agent).copied() else { return };
            let name = name.to_owned();
            let event = Event::Cluster(Box::new(ClusterEvent::FromOwner(owner.clone(), frame)));
            directory.dispatch_live(class.name, &name, event).await;
        })
    }

    fn gateway_lost<'a>(&'a self, link: &'a Arc<GatewayLink>) -> Delivery<'a> {
        Box::pin(async move {
            let Some(directory) = self.directory.upgrade() else { return };
            let instances: Vec<_> = lock(&link.instances).drain().collect();
            for (class, name) in instances {
                let event = Event::Cluster(Box::new(ClusterEvent::GatewayLost(link.clone())));
                directory.dispatch_live(class, &name, event).await;
            }
        })
    }

    fn owner_lost<'a>(&'a self, owner: &'a Arc<str>) -> Delivery<'a> {
        Box::pin(async move {
            let Some(directory) = self.directory.upgrade() else { return };
            directory.tell_all(|| Event::Cluster(Box::new(ClusterEvent::OwnerLost(owner.clone()))));
        })
    }
}
