//! The group registry: group id to running group. Both servers route every request through it,
//! so an unknown group is a lookup miss (NOT_FOUND / 404), never a panic.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::group::Group;
use crate::raft::types::GroupId;

#[derive(Clone, Default)]
pub struct Registry {
    groups: Arc<RwLock<BTreeMap<GroupId, Arc<Group>>>>,
}

impl Registry {
    pub fn get(&self, id: GroupId) -> Option<Arc<Group>> {
        self.read().get(&id).cloned()
    }

    pub fn insert(&self, group: Arc<Group>) {
        self.write().insert(group.id, group);
    }

    pub fn remove(&self, id: GroupId) -> Option<Arc<Group>> {
        self.write().remove(&id)
    }

    pub fn all(&self) -> Vec<Arc<Group>> {
        self.read().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<GroupId, Arc<Group>>> {
        self.groups.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<GroupId, Arc<Group>>> {
        self.groups.write().unwrap_or_else(|e| e.into_inner())
    }
}
