//! The Lua scripts the store runs, each a shared value that reloads itself.

use std::sync::LazyLock;

use super::lua::Lua;

pub(super) static INCREMENT: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/increment.lua")));
pub(super) static BUMP_VERSION: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/bump_version.lua")));
pub(super) static FIXED_WINDOW: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/fixed_window.lua")));
pub(super) static INDEX_ADD: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/index_add.lua")));
pub(super) static INDEX_MEMBERS: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/index_members.lua")));
pub(super) static INDEX_DELETE_ALL: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/index_delete_all.lua")));
pub(super) static RELEASE: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/release.lua")));
pub(super) static CACHE_PUT: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/cache_put.lua")));
pub(super) static LOCK_AND_READ: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/lock_and_read.lua")));
pub(super) static UNLOCK: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/unlock.lua")));
pub(super) static RENEW_LOCK: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/renew_lock.lua")));
pub(super) static GCRA: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(include_str!("../scripts/gcra.lua")));
