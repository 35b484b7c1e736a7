//! openraft's own storage test suite (`openraft::testing`), run against the log store view of
//! the node-wide storage engine and the state machine adapter: the contract openraft relies on
//! (vote, log, purge and truncate semantics, initial state, applied state and membership,
//! snapshot build and install), checked by the suite openraft ships for that purpose.

use std::io;

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;

use crate::kv::KvStore;
use crate::ledger::{Ledger, OwnerKind};
use crate::raft::log_store::GroupLogStore;
use crate::raft::state_machine::SmAdapter;
use crate::raft::types::TypeConfig;
use crate::state_machine::Typed;
use crate::storage::{Storage, StorageOptions};

/// Holds a store's temp dir (and the engine) for as long as the suite uses the store.
struct Guard {
    _dir: tempfile::TempDir,
    _storage: Storage,
}

struct Builder;

impl StoreBuilder<TypeConfig, GroupLogStore, SmAdapter, Guard> for Builder {
    async fn build(&self) -> Result<(Guard, GroupLogStore, SmAdapter), StorageError<TypeConfig>> {
        let err = |e: String| StorageError::read(TypeConfig::err_from_error(&io::Error::other(e)));
        let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
        let ledger = Ledger::new();
        let owner = ledger.root(OwnerKind::Storage, "suite");
        let (storage, _) = Storage::open(
            StorageOptions {
                dir: dir.path().to_path_buf(),
                segment_bytes: 1 << 20,
                checkpoint_bytes: 4 << 20,
                // Tiny: the suite's reads then come from the WAL as well as from the cache.
                cache_bytes: 1024,
                engine: Default::default(),
            },
            &owner,
        )
        .map_err(|e| err(e.to_string()))?;
        let log = GroupLogStore::new(storage.clone(), 1, 4 << 20);
        let sm = SmAdapter::open(1, &storage, Box::new(Typed(KvStore)))
            .map_err(|e| err(e.to_string()))?;
        Ok((
            Guard {
                _dir: dir,
                _storage: storage,
            },
            log,
            sm,
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_store_and_state_machine_pass_openraft_s_suite() {
    Suite::test_all(Builder).await.unwrap();
}
