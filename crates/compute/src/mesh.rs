//! The local node ([`Mesh`], built by [`MeshBuilder`]): the node identity,
//! the pre-shared key, a bound TCP listener, the node's capabilities, and the
//! migration-handler slot ([`MeshNode`]) that at most one
//! [`DaemonRuntime`](crate::DaemonRuntime) occupies at a time.
//!
//! In milestone 1 the listener is bound but accepts nothing: connections wait
//! in the backlog until milestone 2 adds peer sessions. The mesh never reads
//! or writes a runtime's tables; it only holds the handler a runtime installs,
//! and the handler holds the runtime weakly, so there is no reference cycle.
// Only the daemon runtime fills the handler slot.
#![cfg_attr(
    not(feature = "compute"),
    allow(dead_code, reason = "the slot is filled by the compute runtime")
)]

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::capabilities::CapabilitySet;
use crate::identity::{EntityId, Identity};

/// Why a mesh could not be configured or built.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The bind address does not parse as `ip:port` (no DNS lookup is done).
    #[error("invalid bind address {0:?}: expected ip:port")]
    InvalidBindAddr(String),
    /// The pre-shared key is all zero bytes.
    #[error("the pre-shared key is all zero bytes")]
    WeakPsk,
    /// Binding the TCP listener failed.
    #[error("binding the mesh listener failed: {0}")]
    Bind(#[source] std::io::Error),
}

/// Configures a [`Mesh`]; nothing is bound until [`MeshBuilder::build`].
pub struct MeshBuilder {
    bind_addr: SocketAddr,
    psk: Zeroizing<[u8; 32]>,
    identity: Option<Identity>,
    capabilities: CapabilitySet,
}

impl MeshBuilder {
    /// A builder for a node listening on `bind_addr` with pre-shared key `psk`.
    ///
    /// # Errors
    /// `InvalidBindAddr` if `bind_addr` is not a socket address; `WeakPsk` if
    /// every byte of `psk` is zero (repeated non-zero bytes are accepted).
    pub fn new(bind_addr: &str, psk: &[u8; 32]) -> Result<Self, MeshError> {
        let bind_addr = bind_addr
            .parse::<SocketAddr>()
            .map_err(|_| MeshError::InvalidBindAddr(bind_addr.to_owned()))?;
        if psk.iter().all(|&byte| byte == 0) {
            return Err(MeshError::WeakPsk);
        }
        Ok(Self {
            bind_addr,
            psk: Zeroizing::new(*psk),
            identity: None,
            capabilities: CapabilitySet::new(),
        })
    }

    /// The node identity (default: [`Identity::generate`] at build).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The node's capabilities, checked against daemons' requirements at
    /// spawn (default: empty).
    pub fn capabilities(mut self, caps: CapabilitySet) -> Self {
        self.capabilities = caps;
        self
    }

    /// Binds the listener and returns the node.
    ///
    /// # Errors
    /// `Bind` with the operating system's error.
    pub async fn build(self) -> Result<Mesh, MeshError> {
        let listener = TcpListener::bind(self.bind_addr).await.map_err(MeshError::Bind)?;
        let local_addr = listener.local_addr().map_err(MeshError::Bind)?;
        Ok(Mesh {
            node: MeshNode {
                _listener: listener,
                local_addr,
                handler: ArcSwapOption::empty(),
            },
            identity: self.identity.unwrap_or_else(Identity::generate),
            capabilities: self.capabilities,
            _psk: self.psk,
        })
    }
}

/// A local node. Dropping it closes the listener. `Debug` never prints the
/// pre-shared key.
pub struct Mesh {
    node: MeshNode,
    identity: Identity,
    capabilities: CapabilitySet,
    // Kept for milestone 2's session handshakes; zeroized on drop.
    _psk: Zeroizing<[u8; 32]>,
}

impl Mesh {
    /// The address the listener is bound to (the real port for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.node.local_addr
    }

    /// The node identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The node's entity id.
    pub fn node_id(&self) -> &EntityId {
        self.identity.entity_id()
    }

    /// The node's capabilities.
    pub fn capabilities(&self) -> &CapabilitySet {
        &self.capabilities
    }

    /// The listener and handler slot.
    pub fn inner(&self) -> &MeshNode {
        &self.node
    }
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("local_addr", &self.node.local_addr)
            .field("node_id", self.node_id())
            .field("capabilities", &self.capabilities)
            .field("has_migration_handler", &self.node.has_migration_handler())
            .finish_non_exhaustive()
    }
}

/// What a runtime installs in the mesh so that inbound migrations (milestone
/// 2) can reach it.
pub(crate) trait MigrationHandler: Send + Sync {
    /// Whether the runtime behind the handler still exists and is Ready;
    /// inbound offers are refused otherwise.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "milestone 2's inbound offer path asks it")
    )]
    fn is_ready(&self) -> bool;
}

/// The occupant of the handler slot: the handler and the token of the runtime
/// that owns it, so that only the owner can clear it.
pub(crate) struct HandlerEntry {
    pub(crate) owner: u64,
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "milestone 2's inbound offer path asks it")
    )]
    pub(crate) handler: Arc<dyn MigrationHandler>,
}

/// The slot was held by another runtime's handler.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SlotOccupied;

/// The bound listener and the migration-handler slot of a [`Mesh`].
pub struct MeshNode {
    _listener: TcpListener,
    local_addr: SocketAddr,
    handler: ArcSwapOption<HandlerEntry>,
}

impl MeshNode {
    /// Whether a runtime's migration handler is installed.
    pub fn has_migration_handler(&self) -> bool {
        self.handler.load().is_some()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Installs `entry` if the slot is empty; does nothing if it already holds
    /// a handler of the same owner.
    pub(crate) fn install_handler(&self, entry: Arc<HandlerEntry>) -> Result<(), SlotOccupied> {
        loop {
            let current = self.handler.load();
            match current.as_ref() {
                Some(held) if held.owner == entry.owner => return Ok(()),
                Some(_) => return Err(SlotOccupied),
                None => {
                    let previous = self.handler.compare_and_swap(&current, Some(Arc::clone(&entry)));
                    if previous.is_none() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Clears the slot if it holds `owner`'s handler; anyone else's is left.
    pub(crate) fn clear_handler(&self, owner: u64) {
        loop {
            let current = self.handler.load();
            match current.as_ref() {
                Some(held) if held.owner == owner => {
                    let previous = self.handler.compare_and_swap(&current, None);
                    if previous.as_ref().is_some_and(|held| held.owner == owner) {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Whether the installed handler's runtime is Ready (false when empty).
    #[cfg(test)]
    fn handler_is_ready(&self) -> bool {
        self.handler
            .load()
            .as_ref()
            .is_some_and(|entry| entry.handler.is_ready())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(bool);
    impl MigrationHandler for Fixed {
        fn is_ready(&self) -> bool {
            self.0
        }
    }

    fn entry(owner: u64) -> Arc<HandlerEntry> {
        Arc::new(HandlerEntry {
            owner,
            handler: Arc::new(Fixed(owner == 1)),
        })
    }

    #[tokio::test]
    async fn only_the_owner_clears_and_others_are_refused() {
        let mesh = MeshBuilder::new("127.0.0.1:0", &[1; 32])
            .unwrap()
            .build()
            .await
            .unwrap();
        let node = mesh.inner();
        assert_eq!(node.install_handler(entry(1)), Ok(()));
        assert_eq!(node.install_handler(entry(1)), Ok(()));
        assert_eq!(node.install_handler(entry(2)), Err(SlotOccupied));
        assert!(node.handler_is_ready());
        node.clear_handler(2);
        assert!(node.has_migration_handler());
        node.clear_handler(1);
        assert!(!node.has_migration_handler());
        assert_eq!(node.install_handler(entry(2)), Ok(()));
        assert!(!node.handler_is_ready());
    }
}
