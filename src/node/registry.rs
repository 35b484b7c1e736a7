//! The group registry: group id to running group. Both servers route every request through it,
//! so an unknown group is a lookup miss (NOT_FOUND / 404), never a panic.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::group::Group;
use crate::raft::types::GroupId;

/// The groups running on this node. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    groups: Arc<RwLock<BTreeMap<GroupId, Arc<Group>>>>,
}

impl Registry {
    /// The running group `id`.
    pub fn get(&self, id: GroupId) -> Option<Arc<Group>> {
        self.read().get(&id).cloned()
    }

    /// Makes `group` routable.
    pub fn insert(&self, group: Arc<Group>) {
        self.write().insert(group.id, group);
    }

    /// Stops routing to group `id`.
    pub fn remove(&self, id: GroupId) -> Option<Arc<Group>> {
        self.write().remove(&id)
    }

    /// Every running group, by id.
    pub fn all(&self) -> Vec<Arc<Group>> {
        self.read().values().cloned().collect()
    }

    /// How many groups run.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<GroupId, Arc<Group>>> {
        self.groups.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<GroupId, Arc<Group>>> {
        self.groups.write().unwrap_or_else(|e| e.into_inner())
    }
}
